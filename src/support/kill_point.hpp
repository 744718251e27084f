// hakobu — kill points: a test-only hook that SIGKILLs the process at a named
// place inside a critical window, so that the chaos tests can check the
// crash-safety argument at the instructions it is about (see docs/design.md).
//
// Compiled in only with HAKOBU_KILL_POINTS (the dev and sanitizer presets);
// elsewhere `kill_point` is an empty inline function. At run time the process
// dies at the N-th pass through point P when started with
// HAKOBU_KILL_AT=P:N (N defaults to 1); without the variable a point costs
// one relaxed load.
#pragma once

namespace hakobu::detail {

#ifdef HAKOBU_KILL_POINTS
void kill_point(const char* name) noexcept;
#else
inline void kill_point(const char* /*name*/) noexcept {}
#endif

}  // namespace hakobu::detail
