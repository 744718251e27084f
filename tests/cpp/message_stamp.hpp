// hakobu tests — the contents of test messages, shared by the test programs
// and the peer they start: a stamp (producer, sequence number, checksum) and
// a pattern filling the rest, so the receiving process can check every byte.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace hakobu::test {

inline void fill_pattern(std::span<std::byte> out, std::uint64_t seed) {
  std::uint64_t state = seed * 0x9E37'79B9'7F4A'7C15ULL + 0x2545'F491'4F6C'DD1DULL;
  std::size_t i = 0;
  for (; i + 8 <= out.size(); i += 8) {
    state ^= state << 13U;
    state ^= state >> 7U;
    state ^= state << 17U;
    std::memcpy(out.data() + i, &state, 8);
  }
  for (; i < out.size(); ++i) out[i] = static_cast<std::byte>(state >> (8U * (i % 8)));
}

/// A 64-bit FNV-1a-style hash taken a word at a time (fast enough for 1 GiB).
inline std::uint64_t hash_bytes(std::span<const std::byte> in) {
  constexpr std::uint64_t kPrime = 0x0000'0100'0000'01B3ULL;
  std::uint64_t h = 0xCBF2'9CE4'8422'2325ULL ^ in.size();
  std::size_t i = 0;
  for (; i + 8 <= in.size(); i += 8) {
    std::uint64_t word = 0;
    std::memcpy(&word, in.data() + i, 8);
    h = (h ^ word) * kPrime;
    h ^= h >> 29U;
  }
  for (; i < in.size(); ++i) h = (h ^ static_cast<std::uint64_t>(in[i])) * kPrime;
  return h ^ (h >> 32U);
}

// A stamped message: who sent it and its sequence number, with a checksum of
// the pattern that fills the rest.
//   [0,4) magic  [4,8) producer  [8,16) seq  [16,24) hash of [24,size)  [24,size) pattern
constexpr std::uint32_t kStampMagic = 0x504D'4B48U;  // "HKMP"
constexpr std::uint32_t kSentinelProducer = 0xFFFF'FFFFU;
constexpr std::size_t kStampBytes = 24;

/// Sizes cycle through inline (<= 224 B) and block (> 224 B) messages.
inline std::size_t stamped_size(std::uint32_t producer, std::uint64_t seq) {
  constexpr std::size_t kSizes[] = {24, 100, 224, 225, 1000, 5000, 70000};
  return kSizes[(seq + producer) % std::size(kSizes)];
}

inline void write_stamp(std::span<std::byte> out, std::uint32_t producer, std::uint64_t seq) {
  fill_pattern(out.subspan(kStampBytes), (std::uint64_t{producer} << 40U) ^ seq);
  const std::uint64_t hash = hash_bytes(out.subspan(kStampBytes));
  std::memcpy(out.data(), &kStampMagic, 4);
  std::memcpy(out.data() + 4, &producer, 4);
  std::memcpy(out.data() + 8, &seq, 8);
  std::memcpy(out.data() + 16, &hash, 8);
}

struct Stamp {
  std::uint32_t producer = 0;
  std::uint64_t seq = 0;
};

/// Checks a stamped message; an explanation on failure.
inline std::optional<Stamp> read_stamp(std::span<const std::byte> in, std::string& why) {
  if (in.size() < kStampBytes) {
    why = "message of " + std::to_string(in.size()) + " bytes is shorter than a stamp";
    return std::nullopt;
  }
  std::uint32_t magic = 0;
  Stamp stamp;
  std::uint64_t hash = 0;
  std::memcpy(&magic, in.data(), 4);
  std::memcpy(&stamp.producer, in.data() + 4, 4);
  std::memcpy(&stamp.seq, in.data() + 8, 8);
  std::memcpy(&hash, in.data() + 16, 8);
  if (magic != kStampMagic) {
    why = "bad stamp magic";
    return std::nullopt;
  }
  if (hash != hash_bytes(in.subspan(kStampBytes))) {
    why = "checksum mismatch in message " + std::to_string(stamp.producer) + "/" + std::to_string(stamp.seq);
    return std::nullopt;
  }
  return stamp;
}

/// A stamped message of `size` bytes.
inline std::vector<std::byte> stamped(std::uint32_t producer, std::uint64_t seq, std::size_t size) {
  std::vector<std::byte> out(size);
  write_stamp(out, producer, seq);
  return out;
}

}  // namespace hakobu::test
