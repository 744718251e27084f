// hakobu — library version.
#pragma once

#define HAKOBU_VERSION_MAJOR 0
#define HAKOBU_VERSION_MINOR 1
#define HAKOBU_VERSION_PATCH 0

namespace hakobu {
/// The library version as "major.minor.patch".
inline constexpr const char* kVersion = "0.1.0";
}  // namespace hakobu
