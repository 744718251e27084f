// hakobu chaos tests — what the chaos workers send and what they log, shared
// by the worker (chaos_worker.cpp) and the supervisor (test_chaos.cpp).
//
// Every message has a *content*: a stamp followed by a pattern.
//   [0,4) magic  [4,8) producer  [8,16) seq  [16,24) length  [24,32) checksum of [32,length)
// The content is the message's bytes, or the elements of an array message, or
// attachment 0 of a message with attachments, whose own bytes are then an
// *envelope* naming the same (producer, seq):
//   [0,4) magic  [4,8) flags  [8,12) producer  [12,16) forwarder (0: none)  [16,24) seq
// A consumer appends one Record per message it receives to its log, and a
// producer one 8-byte sequence number per message `put` accepted.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>

#include "message_stamp.hpp"  // fill_pattern, hash_bytes (tests/cpp)

namespace hakobu::chaos {

constexpr std::uint32_t kContentMagic = 0x4F41'4843U;   // "CHAO"
constexpr std::uint32_t kEnvelopeMagic = 0x4C56'4E45U;  // "ENVL"
constexpr std::uint32_t kRecordMagic = 0x4452'4352U;    // "RCRD"
constexpr std::uint32_t kStopProducer = 0xFFFF'FFFFU;   // a stop marker's producer id
constexpr std::size_t kStampBytes = 32;
constexpr std::size_t kEnvelopeBytes = 32;
constexpr std::uint32_t kEnvelopeArray = 1;  // envelope flag: the attachment is an array message

struct Stamp {
  std::uint32_t producer = 0;
  std::uint64_t seq = 0;
  std::uint64_t length = 0;
};

inline std::uint64_t pattern_seed(std::uint32_t producer, std::uint64_t seq) {
  return (std::uint64_t{producer} << 40U) ^ seq;
}

/// Fills `out` (at least kStampBytes) with the content of message (producer, seq).
inline void write_content(std::span<std::byte> out, std::uint32_t producer, std::uint64_t seq) {
  const auto body = out.subspan(kStampBytes);
  hakobu::test::fill_pattern(body, pattern_seed(producer, seq));
  const std::uint64_t length = out.size();
  const std::uint64_t checksum = hakobu::test::hash_bytes(body);
  std::memcpy(out.data(), &kContentMagic, 4);
  std::memcpy(out.data() + 4, &producer, 4);
  std::memcpy(out.data() + 8, &seq, 8);
  std::memcpy(out.data() + 16, &length, 8);
  std::memcpy(out.data() + 24, &checksum, 8);
}

/// Checks a content; an explanation in `why` on failure.
inline std::optional<Stamp> read_content(std::span<const std::byte> in, std::string& why) {
  if (in.size() < kStampBytes) {
    why = "content of " + std::to_string(in.size()) + " bytes is shorter than a stamp";
    return std::nullopt;
  }
  std::uint32_t magic = 0;
  Stamp stamp;
  std::uint64_t checksum = 0;
  std::memcpy(&magic, in.data(), 4);
  std::memcpy(&stamp.producer, in.data() + 4, 4);
  std::memcpy(&stamp.seq, in.data() + 8, 8);
  std::memcpy(&stamp.length, in.data() + 16, 8);
  std::memcpy(&checksum, in.data() + 24, 8);
  const std::string who = std::to_string(stamp.producer) + "/" + std::to_string(stamp.seq);
  if (magic != kContentMagic) {
    why = "bad content magic";
    return std::nullopt;
  }
  if (stamp.length != in.size()) {
    why = "message " + who + " says " + std::to_string(stamp.length) + " bytes, has " + std::to_string(in.size());
    return std::nullopt;
  }
  if (checksum != hakobu::test::hash_bytes(in.subspan(kStampBytes))) {
    why = "checksum mismatch in message " + who;
    return std::nullopt;
  }
  return stamp;
}

struct Envelope {
  std::uint32_t flags = 0;
  std::uint32_t producer = 0;
  std::uint32_t forwarder = 0;
  std::uint64_t seq = 0;
};

inline void write_envelope(std::span<std::byte> out, const Envelope& envelope) {
  std::memset(out.data(), 0, kEnvelopeBytes);
  std::memcpy(out.data(), &kEnvelopeMagic, 4);
  std::memcpy(out.data() + 4, &envelope.flags, 4);
  std::memcpy(out.data() + 8, &envelope.producer, 4);
  std::memcpy(out.data() + 12, &envelope.forwarder, 4);
  std::memcpy(out.data() + 16, &envelope.seq, 8);
}

inline std::optional<Envelope> read_envelope(std::span<const std::byte> in) {
  std::uint32_t magic = 0;
  if (in.size() != kEnvelopeBytes) return std::nullopt;
  std::memcpy(&magic, in.data(), 4);
  if (magic != kEnvelopeMagic) return std::nullopt;
  Envelope envelope;
  std::memcpy(&envelope.flags, in.data() + 4, 4);
  std::memcpy(&envelope.producer, in.data() + 8, 4);
  std::memcpy(&envelope.forwarder, in.data() + 12, 4);
  std::memcpy(&envelope.seq, in.data() + 16, 8);
  return envelope;
}

/// What a consumer logs per received message (32 bytes, one write(2) each).
struct Record {
  std::uint32_t magic = kRecordMagic;
  std::uint32_t producer = 0;
  std::uint64_t seq = 0;
  std::uint64_t length = 0;
  std::uint16_t flags = 0;
  std::uint16_t forwarder = 0;
  std::uint32_t consumer = 0;
};
static_assert(sizeof(Record) == 32, "a consumer's record is 32 bytes in the log the checker reads: its layout changed");

// Record flags: how the message travelled, and whether it failed checks.
constexpr std::uint16_t kInShared = 1;      // in a block of the heap (not inline)
constexpr std::uint16_t kArray = 2;         // an array message (or an envelope of one)
constexpr std::uint16_t kAttached = 4;      // content in attachment 0, behind an envelope
constexpr std::uint16_t kForwarded = 8;     // passed through a forwarder
constexpr std::uint16_t kCorrupt = 16;      // the content failed verification
constexpr std::uint16_t kCoreCorrupt = 32;  // get() itself reported GetError::Corrupt

// Worker exit codes.
constexpr int kExitOk = 0;
constexpr int kExitUsage = 1;
constexpr int kExitOpenFailed = 2;
constexpr int kExitOperationFailed = 3;  // put/get/loan/attach failed unexpectedly
constexpr int kExitCorrupt = 4;          // received content failed verification
constexpr int kExitCoreCorrupt = 5;      // get() returned GetError::Corrupt
constexpr int kExitLogFailed = 6;        // writing the log failed
constexpr int kExitKillPointMissed = 7;  // HAKOBU_KILL_AT was set and the point was never reached

}  // namespace hakobu::chaos
