// hakobu tests — checksummed store values for the key-churn tests
// (test_store.cpp and its peer, store_peer.cpp).
//
// A churn value names its key and round and ends with a checksum of what comes
// before it, so a reader can tell a whole value of the key it asked for from a
// torn one or another key's.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace hakobu::test {

/// The key of a churn round: 16 names per prefix, so that readers find values
/// while every erase and insert of another name moves a key in or out of an entry.
inline std::string churn_key(std::string_view prefix, std::uint64_t round) {
  return std::string(prefix) + std::to_string(round % 16);
}

inline std::uint64_t churn_checksum(std::span<const std::byte> bytes) noexcept {
  std::uint64_t h = 0xcbf2'9ce4'8422'2325ULL;
  for (const std::byte b : bytes) {
    h ^= std::to_integer<std::uint64_t>(b);
    h *= 0x100'0000'01b3ULL;
  }
  return h;
}

/// "KEY#ROUND#" and some filler (its length varies with the round), then the checksum.
inline std::vector<std::byte> churn_value(std::string_view key, std::uint64_t round) {
  std::string body = std::string(key) + '#' + std::to_string(round) + '#';
  body.append(static_cast<std::size_t>(round % 13) * 8, static_cast<char>('a' + round % 26));
  std::vector<std::byte> out(body.size() + sizeof(std::uint64_t));
  std::memcpy(out.data(), body.data(), body.size());
  const std::uint64_t sum = churn_checksum(std::span(out).first(body.size()));
  std::memcpy(out.data() + body.size(), &sum, sizeof sum);
  return out;
}

/// True when `bytes` is a whole churn value of `key`.
inline bool churn_value_ok(std::string_view key, std::span<const std::byte> bytes) {
  if (bytes.size() < key.size() + 1 + sizeof(std::uint64_t)) return false;
  const auto body = bytes.first(bytes.size() - sizeof(std::uint64_t));
  std::uint64_t sum = 0;
  std::memcpy(&sum, bytes.data() + body.size(), sizeof sum);
  if (sum != churn_checksum(body)) return false;
  const std::string prefix = std::string(key) + '#';
  return std::memcmp(body.data(), prefix.data(), prefix.size()) == 0;
}

}  // namespace hakobu::test
