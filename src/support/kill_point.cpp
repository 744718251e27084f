// hakobu — kill points (see kill_point.hpp).
#include "support/kill_point.hpp"

#ifdef HAKOBU_KILL_POINTS

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <string>

namespace hakobu::detail {
namespace {

struct KillTarget {
  std::string point;
  long at = 0;  // 0: no target
};

const KillTarget& target() {
  static const KillTarget parsed = [] {
    KillTarget t;
    const char* spec = std::getenv("HAKOBU_KILL_AT");  // NOLINT(concurrency-mt-unsafe): read once
    if (spec == nullptr || *spec == '\0') return t;
    const char* colon = std::strchr(spec, ':');
    t.point = colon != nullptr ? std::string(spec, colon) : std::string(spec);
    t.at = colon != nullptr ? std::strtol(colon + 1, nullptr, 10) : 1;
    return t;
  }();
  return parsed;
}

std::atomic<long> g_passes{0};

}  // namespace

void kill_point(const char* name) noexcept {
  const KillTarget& t = target();
  if (t.at <= 0 || t.point != name) return;
  if (g_passes.fetch_add(1, std::memory_order_relaxed) + 1 == t.at) (void)std::raise(SIGKILL);
}

}  // namespace hakobu::detail

#endif
