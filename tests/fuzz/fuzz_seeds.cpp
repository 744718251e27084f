// fuzz_seeds — writes the seed corpora of the fuzz targets:
//
//   build/fuzz/tests/fuzz/fuzz_seeds tests/fuzz/corpus
//
// writes DIR/<target>/<seed> for every target. Array messages and queue files
// are made by the library itself (so they are valid to begin with); the
// record-based targets get small hand-made records (formats in each target's
// header comment), each aimed at one reader of damaged shared memory.
#include <sys/stat.h>

#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "channel/ring.hpp"
#include "fuzz_support.hpp"
#include "hakobu/hakobu.hpp"

namespace {

using namespace std::chrono_literals;
using hakobu::fuzz::block_ref;
using hakobu::fuzz::BlockField;
using hakobu::fuzz::packed_block_ref;
using Bytes = std::vector<std::uint8_t>;

std::string g_out;  // NOLINT(cppcoreguidelines-avoid-non-const-global-variables)

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "fuzz_seeds: %s\n", what.c_str());
  std::exit(1);
}

void save(const std::string& target, const std::string& name, std::span<const std::uint8_t> bytes) {
  const std::string dir = g_out + "/" + target;
  ::mkdir(dir.c_str(), 0755);
  const std::string path = dir + "/" + name;
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr || std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size() || std::fclose(f) != 0) {
    fail("cannot write " + path);
  }
}

// --- records --------------------------------------------------------------------

struct Records {
  Bytes bytes;
  explicit Records(std::uint8_t first) { bytes.push_back(first); }
  Records() = default;
  Records& op(std::uint8_t code) {
    bytes.push_back(code);
    return *this;
  }
  Records& u8(std::uint8_t value) {
    bytes.push_back(value);
    return *this;
  }
  Records& u16(std::uint16_t value) {
    bytes.push_back(static_cast<std::uint8_t>(value));
    bytes.push_back(static_cast<std::uint8_t>(value >> 8U));
    return *this;
  }
  Records& u64(std::uint64_t value) {
    for (unsigned i = 0; i < 8; ++i) bytes.push_back(static_cast<std::uint8_t>(value >> (8U * i)));
    return *this;
  }
};

constexpr std::uint8_t block_op(unsigned block, BlockField field) {
  return static_cast<std::uint8_t>(block << 4U | static_cast<unsigned>(field));
}
constexpr std::uint8_t slot_op(unsigned slot, unsigned field) {
  return static_cast<std::uint8_t>(0x60U | slot << 2U | field);
}

// Blocks of fuzz_block: 0 arr, 1 msg, 2 data0, 3 data1, 4 holdings table, 5 spare.
void block_seeds() {
  const std::string t = "fuzz_block";
  constexpr unsigned kArr = 0;
  constexpr unsigned kMsg = 1;
  constexpr unsigned kData0 = 2;
  constexpr unsigned kData1 = 3;
  constexpr unsigned kHoldings = 4;
  constexpr unsigned kSpare = 5;
  save(t, "send-all", Records(0x1E).bytes);
  save(t, "send-all-trim", Records(0x3F).bytes);
  save(t, "msg-huge-size-class", Records(0x04).op(block_op(kMsg, BlockField::SizeClass)).u64(159).bytes);
  save(t, "msg-huge-size-class-late", Records(0x25).op(block_op(kMsg, BlockField::SizeClass)).u64(120).bytes);
  save(t, "msg-attachment-count", Records(0x05).op(block_op(kMsg, BlockField::AttachmentCount)).u64(0xFFFF'FFFF).bytes);
  save(t, "msg-attachment-table",
       Records(0x05).op(block_op(kMsg, BlockField::AttachmentTable)).u64(std::uint64_t{1} << 40).bytes);
  save(t, "msg-entry-inside-data1",
       Records(0x05).op(block_op(kMsg, BlockField::AttachmentEntry)).u8(1).u64(block_ref(kData1, 4096)).bytes);
  save(t, "msg-entry-self",
       Records(0x05).op(block_op(kMsg, BlockField::AttachmentEntry)).u8(0).u64(block_ref(kMsg)).bytes);
  save(t, "arr-entry-is-holdings",
       Records(0x03).op(block_op(kArr, BlockField::AttachmentEntry)).u8(0).u64(block_ref(kHoldings)).bytes);
  save(t, "arr-meta-shape",
       Records(0x02).op(block_op(kArr, BlockField::PayloadWord)).u16(1).u64(0x7FFF'FFFF'FFFF'FFFFULL).bytes);
  save(t, "data0-refs-zero", Records(0x06).op(block_op(kData0, BlockField::Refs)).u64(0).bytes);
  save(t, "data0-payload-bytes", Records(0x07).op(block_op(kData0, BlockField::PayloadBytes)).u64(~0ULL).bytes);
  save(t, "data1-backed-bytes", Records(0x0C).op(block_op(kData1, BlockField::BackedBytes)).u64(64).bytes);
  save(t, "data1-next-free-self",
       Records(0x2C).op(block_op(kData1, BlockField::NextFree)).u64(packed_block_ref(kData1)).bytes);
  // Layout 3: a forged payload shift (data1 is large enough to be placed; msg is not).
  save(t, "data1-payload-shift-max", Records(0x09).op(block_op(kData1, BlockField::PayloadShift)).u64(4032).bytes);
  save(t, "data1-payload-shift-odd", Records(0x0C).op(block_op(kData1, BlockField::PayloadShift)).u64(100).bytes);
  save(t, "msg-payload-shift-huge", Records(0x05).op(block_op(kMsg, BlockField::PayloadShift)).u64(0xFFFF).bytes);
  save(t, "holdings-size-class", Records(0x06).op(block_op(kHoldings, BlockField::SizeClass)).u64(150).bytes);
  save(t, "spare-attachment-table",
       Records(0x04).op(block_op(kSpare, BlockField::AttachmentTable)).u64(std::uint64_t{1} << 32).bytes);
  save(t, "spare-attachment-count", Records(0x04).op(block_op(kSpare, BlockField::AttachmentCount)).u64(1).bytes);
  save(t, "slot-names-data0",
       Records(0x10)
           .op(slot_op(0, 3))
           .u64(block_ref(kData0))
           .op(slot_op(0, 2))
           .u64(1000)
           .op(slot_op(0, 1))
           .u64(1)
           .bytes);
  save(t, "slot-names-arr-data", Records(0x12).op(slot_op(0, 3)).u64(block_ref(kData0)).op(slot_op(0, 1)).u64(2).bytes);
  save(t, "slot-inline-too-long", Records(0x10).op(slot_op(0, 2)).u64(4096).bytes);
  save(t, "slot-control-ahead",
       Records(0x10)
           .op(slot_op(1, 0))
           .u64(hakobu::detail::make_control(1 + (1U << 20), hakobu::detail::SlotState::Full, 0))
           .bytes);
}

// fuzz_registry_attach: known blocks are the dead child's holdings table (0), what it lists (1 the
// first message it received, 2 its 300-byte loan, 3 its 4096-byte loan), then the ring's (4 first, 5 second).
void registry_seeds() {
  const std::string t = "fuzz_registry_attach";
  constexpr std::uint8_t kSlot0 = 0x18;  // + field: 0 state, 1 generation, 4 holdings, 6 holdings_used
  constexpr std::uint8_t kSlot1 = 0x20;
  constexpr std::uint8_t kFreeList = 0x48;  // + size class
  constexpr std::uint8_t kPageMap = 0xE8;
  constexpr std::uint8_t kBlock = 0xF0;  // + BlockField
  const auto block = [](BlockField field) { return static_cast<std::uint8_t>(kBlock + static_cast<unsigned>(field)); };
  save(t, "as-left", Records().bytes);
  save(t, "holdings-used-huge", Records().op(kSlot0 + 6).u64(std::uint64_t{1} << 40).bytes);
  save(t, "holdings-table-size-class", Records().op(block(BlockField::SizeClass)).u8(0).u64(159).bytes);
  save(t, "holdings-table-is-scratch", Records().op(kSlot0 + 4).u64(block_ref(3)).op(kSlot0 + 6).u64(64).bytes);
  save(t, "holdings-entry-inside",
       Records().op(block(BlockField::PayloadWord)).u8(0).u16(0).u64(block_ref(2, 64)).bytes);
  save(t, "holdings-lists-table", Records().op(block(BlockField::PayloadWord)).u8(0).u16(1).u64(block_ref(0)).bytes);
  save(t, "second-dead-slot",
       Records().op(kSlot1).u64(1).op(kSlot1 + 1).u64(7).op(kSlot1 + 4).u64(block_ref(5)).op(kSlot1 + 6).u64(8).bytes);
  save(t, "free-list-class-9-loop",
       Records()
           .op(kFreeList + 9)
           .u64(packed_block_ref(1))
           .op(block(BlockField::NextFree))
           .u8(1)
           .u64(packed_block_ref(1))
           .bytes);
  save(t, "refs-zero", Records().op(block(BlockField::Refs)).u8(3).u64(0).bytes);
  save(t, "heap-top-beyond", Records().op(8).u64(std::uint64_t{1} << 40).bytes);
  save(t, "bad-magic", Records().op(0).u64(0x1234).bytes);
  save(t, "huge-segment",
       Records().op(18).u64(std::uint64_t{2} << 20).op(19).u64(std::uint64_t{2} << 20).op(20).u64(0x2F706D742F).bytes);
  save(t, "cache-limit-zero", Records().op(5).u64(0).op(11).u64(~0ULL).bytes);
  save(t, "page-map-empty", Records().op(kPageMap).u16(0).u64(0).op(kPageMap).u16(1).u64(0).bytes);
  save(t, "page-map-full", Records().op(kPageMap).u16(2).u64(~0ULL).op(kPageMap).u16(3).u64(~0ULL).bytes);
  save(t, "page-map-backed-huge", Records().op(15).u64(~0ULL).bytes);
}

// --- arrays ---------------------------------------------------------------------

void array_seed(const std::string& name, hakobu::DType dtype, std::vector<std::int64_t> shape,
                std::vector<std::int64_t> strides, std::int64_t byte_offset, std::string typestr, std::size_t data,
                bool external) {
  const std::size_t meta = hakobu::array_meta_size(shape.size(), typestr.size());
  std::vector<std::byte> message(meta + (external ? 0 : data));
  hakobu::write_array_meta(std::span(message).first(meta), dtype, shape, strides, byte_offset, typestr,
                           hakobu::Order::C, external ? 1 : 0);
  for (std::size_t i = meta; i < message.size(); ++i) message[i] = static_cast<std::byte>(i);
  Bytes out;
  out.push_back(external ? 1 : 0);
  if (external) {
    out.push_back(static_cast<std::uint8_t>(message.size()));
    out.push_back(static_cast<std::uint8_t>(message.size() >> 8U));
  }
  for (const auto b : message) out.push_back(static_cast<std::uint8_t>(b));
  if (external) out.insert(out.end(), data, 0x7E);
  save("fuzz_array_header", name, out);
}

void array_seeds() {
  using hakobu::DType;
  using hakobu::DTypeCode;
  array_seed("f32-vector", DType::of<float>(), {6}, {}, 0, "", 24, false);
  array_seed("i16-matrix", DType::of<std::int16_t>(), {3, 4}, {}, 0, "", 24, false);
  array_seed("f64-scalar", DType::of<double>(), {}, {}, 0, "", 8, false);
  array_seed("u8-reversed", DType::of<std::uint8_t>(), {2, 5}, {-5, -1}, 9, "", 10, false);
  array_seed("u8-broadcast", DType::of<std::uint8_t>(), {1000, 3}, {0, 1}, 0, "", 3, false);
  array_seed("empty", DType::of<std::int32_t>(), {0, 7}, {}, 0, "", 0, false);
  array_seed("datetime-typestr", DType{DTypeCode::Int, 64, 1}, {3}, {}, 0, "<M8[ns]", 24, false);
  array_seed("complex-lanes", DType{DTypeCode::Complex, 64, 2}, {2}, {}, 0, "", 32, false);
  array_seed("f32-by-reference", DType::of<float>(), {4, 2}, {8, 4}, 16, "", 48, true);
  array_seed("u16-by-reference-fortran", DType::of<std::uint16_t>(), {3, 3}, {2, 6}, 0, "", 18, true);
}

// --- queue files ------------------------------------------------------------------

hakobu::QueueOptions queue_options(const std::string& domain, std::size_t capacity, std::size_t inline_capacity) {
  hakobu::QueueOptions options;
  options.capacity = capacity;
  options.inline_capacity = inline_capacity;
  options.spin = 0ns;
  options.domain.name = domain;
  options.domain.heap_capacity = std::uint64_t{16} << 20;
  options.domain.cache_limit = std::uint64_t{256} << 10;
  options.domain.huge_pages = hakobu::HugePages::Never;
  return options;
}

// As fuzz_queue_attach sets up its domain: two loans, 1000 and 300 bytes, so
// block offsets in these files name the target's blocks. `fill` puts messages.
template <class Fill>
Bytes queue_file(std::size_t capacity, std::size_t inline_capacity, Fill&& fill) {
  const std::string domain = hakobu::fuzz::domain_name("seeds");
  const auto options = queue_options(domain, capacity, inline_capacity);
  Bytes out;
  {
    auto d = hakobu::Domain::open(options.domain);
    if (!d) fail(d.error().message);
    auto data_loan = d->loan(1000);
    auto message = d->loan(300);
    if (!data_loan || !message) fail("loans");
    auto queue = hakobu::Queue::create("f", options);
    if (!queue) fail(queue.error().message);
    fill(*queue, *message);
    for (const auto b : hakobu::fuzz::read_file("hakobu:" + domain + ":q:f"))
      out.push_back(static_cast<std::uint8_t>(b));
    (void)queue->unlink();
  }
  hakobu::fuzz::remove_domain_files(domain);
  return out;
}

std::span<std::uint8_t> slot_bytes(Bytes& file, std::size_t index) {
  const auto* header = reinterpret_cast<const hakobu::detail::QueueHeader*>(file.data());  // NOLINT
  return std::span(file).subspan(sizeof(hakobu::detail::QueueHeader) + index * header->slot_bytes,
                                 hakobu::detail::kSlotHeaderBytes);
}

template <class T>
void poke(Bytes& file, std::size_t offset, T value) {
  std::memcpy(file.data() + offset, &value, sizeof value);
}

// Layout 4's end of stream and byte count (ring.hpp): forged sender entries and
// stream flags, and byte counts and limits no live queue has.
void stream_seeds(std::span<const std::byte> small, std::span<const std::byte> large) {
  namespace d = hakobu::detail;
  const std::string t = "fuzz_queue_attach";
  const std::size_t senders = offsetof(d::QueueHeader, senders);
  const std::size_t flags = offsetof(d::QueueHeader, stream_flags);
  const std::size_t bytes = offsetof(d::QueueHeader, bytes_queued);
  const std::size_t limit = offsetof(d::QueueHeader, capacity_bytes);
  const std::uint32_t dead_token = 1000U | (7U << 10U);  // process slot 1000: nobody's
  const auto entry = [](std::uint32_t token) { return d::kSenderEntry | token; };
  const auto with_message = [&](std::size_t capacity_bytes) {
    auto fill = [&](hakobu::Queue& q, auto&) {
      (void)q.try_put(large);
      (void)q.try_put(small);
    };
    Bytes file = queue_file(4, hakobu::kMaxInlineBytes, fill);
    poke<std::uint64_t>(file, limit, capacity_bytes);
    for (std::size_t i = 0; i < d::kSenderSlots; ++i) poke<std::uint64_t>(file, senders + 8 * i, 0);  // closed
    return file;
  };

  // A handle that put is listed as a sender while queue_file reads the file:
  // this process's token in a fresh domain, which is the harness's (both are
  // its first process), so the library takes the entry for its own (never reaped).
  Bytes own = queue_file(4, hakobu::kMaxInlineBytes, [&](hakobu::Queue& q, auto&) { (void)q.try_put(small); });
  std::uint64_t own_entry = 0;
  std::memcpy(&own_entry, own.data() + senders, 8);
  if (own_entry == 0) fail("the sender table of a queue just sent on is empty");
  Bytes listed = with_message(std::uint64_t{1} << 20);
  poke<std::uint64_t>(listed, senders, 0);
  poke<std::uint64_t>(listed, senders + 8 * 5, own_entry);  // another place in the table
  save(t, "sender-own-moved-4", listed);
  Bytes own_empty = queue_file(4, hakobu::kMaxInlineBytes, [](auto&, auto&) {});
  poke<std::uint32_t>(own_empty, flags, d::kEverSent);
  poke<std::uint64_t>(own_empty, senders, own_entry);
  poke<std::uint64_t>(own_empty, senders + 8, own_entry);  // listed twice
  save(t, "sender-own-twice-empty-4", own_empty);

  Bytes dead = queue_file(4, hakobu::kMaxInlineBytes, [](auto&, auto&) {});
  poke<std::uint32_t>(dead, flags, d::kEverSent);
  poke<std::uint64_t>(dead, senders, entry(dead_token));
  save(t, "sender-dead-4", dead);
  Bytes stale = with_message(std::uint64_t{1} << 20);  // the harness's slot, an older generation
  poke<std::uint32_t>(stale, flags, d::kEverSent);
  poke<std::uint64_t>(stale, senders + 8 * 63, entry(0U | (1000U << 10U)));
  save(t, "sender-stale-generation-4", stale);
  Bytes garbage = queue_file(4, hakobu::kMaxInlineBytes, [](auto&, auto&) {});
  poke<std::uint32_t>(garbage, flags, d::kEverSent | d::kSenderFailed);
  const std::uint64_t words[] = {~std::uint64_t{0}, d::kSenderEntry, 1, std::uint64_t{0xDEAD'BEEF'0BAD'F00D},
                                 entry(~0U)};
  for (std::size_t i = 0; i < std::size(words); ++i) poke(garbage, senders + 8 * (i * 13 % d::kSenderSlots), words[i]);
  save(t, "sender-garbage-4", garbage);
  Bytes full_table = queue_file(4, hakobu::kMaxInlineBytes, [](auto&, auto&) {});
  poke<std::uint32_t>(full_table, flags, d::kEverSent);
  for (std::size_t i = 0; i < d::kSenderSlots; ++i) {
    poke(full_table, senders + 8 * i, entry(static_cast<std::uint32_t>(900 + i) | (3U << 10U)));
  }
  save(t, "sender-table-full-dead-4", full_table);

  const std::pair<const char*, std::uint32_t> flag_seeds[] = {
      {"stream-ended-4", d::kEverSent},
      {"stream-failed-4", d::kEverSent | d::kSenderFailed},
      {"stream-flags-all-4", ~0U},
  };
  for (const auto& [name, value] : flag_seeds) {
    Bytes file = with_message(std::uint64_t{1} << 20);
    poke(file, flags, value);
    save(t, name, file);
  }
  // Senders counted outside the full table, and the registration counter.
  const std::size_t untracked = offsetof(d::QueueHeader, untracked_senders);
  const std::size_t registrations = offsetof(d::QueueHeader, registrations);
  const std::pair<const char*, std::uint32_t> untracked_seeds[] = {{"untracked-one-4", 1},
                                                                   {"untracked-all-bits-4", ~0U}};
  for (const auto& [name, value] : untracked_seeds) {
    Bytes file = with_message(std::uint64_t{1} << 20);
    poke<std::uint32_t>(file, flags, d::kEverSent);
    poke(file, untracked, value);
    poke<std::uint32_t>(file, registrations, ~0U);
    save(t, name, file);
  }
  // Reservations shown in sender entries (given back when a dead entry is reaped).
  const std::size_t reserving = offsetof(d::QueueHeader, senders_reserving);
  Bytes dead_reserving = with_message(std::uint64_t{1} << 20);
  poke<std::uint32_t>(dead_reserving, flags, d::kEverSent);
  poke<std::uint64_t>(dead_reserving, senders + 8 * 2, entry(dead_token));
  poke<std::uint64_t>(dead_reserving, reserving + 8 * 2, ~std::uint64_t{0});
  poke<std::uint64_t>(dead_reserving, senders + 8 * 3, entry(dead_token + 1));
  poke<std::uint64_t>(dead_reserving, reserving + 8 * 3, std::uint64_t{1} << 62);
  poke<std::uint64_t>(dead_reserving, reserving + 8 * 4, 12345);  // no entry: stale
  save(t, "sender-dead-reserving-huge-4", dead_reserving);
  Bytes own_reserving = with_message(0);
  poke<std::uint32_t>(own_reserving, flags, d::kEverSent);
  poke<std::uint64_t>(own_reserving, senders, own_entry);
  poke<std::uint64_t>(own_reserving, reserving, 1000);
  save(t, "sender-own-reserving-4", own_reserving);

  const std::pair<const char*, std::int64_t> count_seeds[] = {
      {"bytes-queued-huge-4", INT64_MAX},
      {"bytes-queued-near-max-4", INT64_MAX - 100},
      {"bytes-queued-negative-4", -1},
      {"bytes-queued-min-4", INT64_MIN},
  };
  for (const auto& [name, value] : count_seeds) {
    Bytes file = with_message(std::uint64_t{1} << 20);
    poke(file, bytes, value);
    save(t, name, file);
    Bytes empty = queue_file(4, hakobu::kMaxInlineBytes, [](auto&, auto&) {});
    poke<std::uint64_t>(empty, limit, std::uint64_t{1} << 20);
    poke(empty, bytes, value);
    save(t, std::string(name) + "-empty", empty);
  }
  // Without inline slots every put reserves bytes, the harness's first one on
  // an empty ring (admitted whatever the count): reserve_bytes once overflowed
  // a signed sum on these (regressions/fuzz_queue_attach/bytes-queued-*).
  Bytes huge_no_inline = queue_file(4, 0, [](auto&, auto&) {});
  poke<std::uint64_t>(huge_no_inline, limit, std::uint64_t{1} << 20);
  poke<std::int64_t>(huge_no_inline, bytes, INT64_MAX);
  save(t, "bytes-queued-huge-no-inline-empty-4", huge_no_inline);
  Bytes min_no_inline = queue_file(4, 0, [&](hakobu::Queue& q, auto&) { (void)q.try_put(small); });
  for (std::size_t i = 0; i < d::kSenderSlots; ++i) poke<std::uint64_t>(min_no_inline, senders + 8 * i, 0);
  poke<std::uint64_t>(min_no_inline, limit, std::uint64_t{1} << 20);
  poke<std::int64_t>(min_no_inline, bytes, INT64_MIN);  // taking the 8 bytes wraps it to INT64_MAX - 7
  save(t, "bytes-queued-min-no-inline-4", min_no_inline);
  save(t, "capacity-bytes-0-4", with_message(0));
  save(t, "capacity-bytes-1-4", with_message(1));
  save(t, "capacity-bytes-huge-4", with_message(~std::uint64_t{0}));
}

void queue_seeds() {
  const std::string t = "fuzz_queue_attach";
  const std::byte small[8] = {std::byte{1}, std::byte{2}, std::byte{3}};
  const std::vector<std::byte> large(1000, std::byte{0x6B});
  save(t, "empty-4", queue_file(4, hakobu::kMaxInlineBytes, [](auto&, auto&) {}));
  save(t, "mixed-4", queue_file(4, hakobu::kMaxInlineBytes, [&](hakobu::Queue& q, hakobu::Loan& message) {
         (void)q.try_put(small);
         (void)q.try_put(message);
         (void)q.try_put(large);
       }));
  save(t, "full-1", queue_file(1, hakobu::kMaxInlineBytes, [&](hakobu::Queue& q, auto&) { (void)q.try_put(small); }));
  save(t, "wrapped-2", queue_file(2, hakobu::kMaxInlineBytes, [&](hakobu::Queue& q, auto&) {
         for (int i = 0; i < 5; ++i) {
           (void)q.try_put(small);
           (void)q.try_get();
         }
         (void)q.try_put(small);
       }));
  save(t, "no-inline-8", queue_file(8, 0, [&](hakobu::Queue& q, hakobu::Loan& message) {
         (void)q.try_put(message);
         (void)q.try_put(large);
       }));
  Bytes unlinked = queue_file(4, hakobu::kMaxInlineBytes, [&](hakobu::Queue& q, auto&) { (void)q.try_put(small); });
  const std::uint32_t flag = hakobu::detail::kQueueUnlinked;
  std::memcpy(unlinked.data() + offsetof(hakobu::detail::QueueHeader, flags), &flag, 4);
  save(t, "unlinked-4", unlinked);
  // A producer that died while writing slot 0 (token: slot 5, generation 1).
  Bytes claimed = queue_file(4, hakobu::kMaxInlineBytes, [&](hakobu::Queue& q, auto&) { (void)q.try_put(small); });
  const std::uint64_t writing = hakobu::detail::make_control(0, hakobu::detail::SlotState::Writing, 5U | 1U << 10U);
  std::memcpy(slot_bytes(claimed, 0).data(), &writing, 8);
  save(t, "dead-writer-4", claimed);
  // Positions far ahead of the hints: every claimer has to skip forward.
  Bytes ahead = queue_file(4, hakobu::kMaxInlineBytes, [](auto&, auto&) {});
  for (std::size_t i = 0; i < 4; ++i) {
    const std::uint64_t far =
        hakobu::detail::make_control(i + (std::uint64_t{1} << 20), hakobu::detail::SlotState::Full, 0);
    std::memcpy(slot_bytes(ahead, i).data(), &far, 8);
  }
  save(t, "positions-ahead-4", ahead);
  stream_seeds(small, large);
}

}  // namespace

// Records of fuzz_store (no flags byte): blocks 0 record of "a" (inline),
// 1 record of "b", 2 the value block of "b"; entries 0..7 of the store.
void store_seeds() {
  const std::string t = "fuzz_store";
  constexpr std::uint8_t kHeaderWord = 0x00;
  constexpr std::uint8_t kEntryWord = 0x10;
  constexpr std::uint8_t kEntryCurrent = 0x18;
  const auto store_block_op = [](unsigned block, BlockField field) {
    return static_cast<std::uint8_t>(0x20U + (block << 4U | static_cast<unsigned>(field)));
  };
  save(t, "untouched", Records().bytes);
  save(t, "header-capacity", Records().op(kHeaderWord + 2).u64(std::uint64_t{1} << 19).bytes);
  save(t, "header-magic", Records().op(kHeaderWord).u64(0).bytes);
  // Header word 8 is reserved[1], the insert lock: a dead holder's, and this process's own token.
  save(t, "insert-lock-dead", Records().op(kHeaderWord + 8).u64((std::uint64_t{1} << 32U) | 1000U).bytes);
  save(t, "insert-lock-own-token", Records().op(kHeaderWord + 8).u64((std::uint64_t{1} << 32U) | 1024U).bytes);
  for (std::uint8_t e = 0; e < 8; ++e) {
    save(t, "entry" + std::to_string(e) + "-state-claiming",
         Records().op(kEntryWord + e).u8(0).u64(0x0000'0001'0000'0FA2ULL).bytes);
    save(t, "entry" + std::to_string(e) + "-key-bytes-huge", Records().op(kEntryWord + e).u8(0).u64(~0ULL).bytes);
    save(t, "entry" + std::to_string(e) + "-names-value-block",
         Records().op(kEntryCurrent + e).u8(2).u16(0).u16(0).bytes);
    save(t, "entry" + std::to_string(e) + "-retired", Records().op(kEntryWord + e).u8(2).u64(~0ULL).bytes);
  }
  save(t, "record-a-size", Records().op(store_block_op(0, BlockField::PayloadWord)).u16(2).u64(~0ULL).bytes);
  save(t, "record-a-where", Records().op(store_block_op(0, BlockField::PayloadWord)).u16(3).u64(~0ULL).bytes);
  save(t, "record-b-entry-self",
       Records().op(store_block_op(1, BlockField::AttachmentEntry)).u8(0).u64(block_ref(1)).bytes);
  save(t, "record-b-refs-zero", Records().op(store_block_op(1, BlockField::Refs)).u64(0).bytes);
  save(t, "value-b-payload-bytes", Records().op(store_block_op(2, BlockField::PayloadBytes)).u64(8).bytes);
}

// Records of fuzz_topic (no flags byte): blocks 0 message 1, 1 message 2, 2 its
// attachment, 3 the array message 3; entries 0 (block, read 2) and 1 (drop
// oldest, read none) of 4; slots 0..4 hold messages 0..4 of 8.
void topic_seeds() {
  const std::string t = "fuzz_topic";
  constexpr std::uint8_t kEntryCursor = 0x44;
  constexpr std::uint8_t kSlotWord = 0x48;
  constexpr std::uint8_t kSlotControl = 0x50;
  constexpr std::uint8_t kMine = 0;
  constexpr std::uint8_t kDead = 1;
  const auto topic_block_op = [](unsigned block, BlockField field) {
    return static_cast<std::uint8_t>(0x60U + (block << 4U | static_cast<unsigned>(field)));
  };
  // A claim: u32 position, u8 state (0 EMPTY/FREE, 1 WRITING/JOINING, 2 FULL/ACTIVE, 3 RETIRING/READING), who.
  const auto claim = [](std::uint8_t op, std::uint32_t position, std::uint8_t state, std::uint8_t who) {
    return Records()
        .op(op)
        .u16(static_cast<std::uint16_t>(position))
        .u16(static_cast<std::uint16_t>(position >> 16U))
        .u8(state)
        .u8(who)
        .bytes;
  };
  save(t, "untouched", Records().bytes);
  // Header words (TopicHeader): 0 magic, 2 capacity | history << 32, 6 flags | entries_used << 32,
  // 8 publish_pos, 16 published | subscribers_waiting << 32, 40.. the watchers.
  save(t, "header-magic", Records().op(0).u64(0).bytes);
  save(t, "header-capacity-huge", Records().op(2).u64((std::uint64_t{2} << 32U) | (std::uint64_t{1} << 31U)).bytes);
  save(t, "header-entries-used-huge", Records().op(6).u64(0xFFFF'FFFF'0000'0000ULL).bytes);
  save(t, "header-unlinked", Records().op(6).u64((std::uint64_t{2} << 32U) | 1U).bytes);
  save(t, "publish-pos-far", Records().op(8).u64(0x8000'0000ULL).bytes);
  save(t, "publish-pos-behind", Records().op(8).u64(1).bytes);
  save(t, "watcher-forged", Records().op(16).u64(std::uint64_t{1} << 52U).op(40).u64(0x1234'5678'9ABC'0001ULL).bytes);
  for (std::uint8_t e = 0; e < 4; ++e) {
    const std::string entry = "entry" + std::to_string(e);
    save(t, entry + "-reading-dead", claim(kEntryCursor + e, 0, 3, kDead));
    save(t, entry + "-active-dead", claim(kEntryCursor + e, 1, 2, kDead));
    save(t, entry + "-joining-mine", claim(kEntryCursor + e, 0, 1, kMine));
    save(t, entry + "-far-ahead", claim(kEntryCursor + e, 0x7FFF'FFFFU, 2, kMine));
  }
  for (std::uint8_t slot = 0; slot < 5; ++slot) {
    const std::string name = "slot" + std::to_string(slot);
    save(t, name + "-writing-dead", claim(kSlotControl + slot, slot, 1, kDead));
    save(t, name + "-retiring-dead", claim(kSlotControl + slot, slot, 3, kDead));
    save(t, name + "-empty-next-lap", claim(kSlotControl + slot, slot + 8U, 0, kMine));
    save(t, name + "-names-attachment", Records().op(kSlotWord + slot).u8(3).u64(block_ref(2)).bytes);
    save(t, name + "-length-huge", Records().op(kSlotWord + slot).u8(2).u64(~0ULL).bytes);
    save(t, name + "-kind-bad", Records().op(kSlotWord + slot).u8(1).u64(9).bytes);
  }
  save(t, "message1-refs-zero", Records().op(topic_block_op(0, BlockField::Refs)).u64(0).bytes);
  save(t, "message2-attachment-self",
       Records().op(topic_block_op(1, BlockField::AttachmentEntry)).u8(0).u64(block_ref(1)).bytes);
  save(t, "array-payload-bytes", Records().op(topic_block_op(3, BlockField::PayloadBytes)).u64(8).bytes);
}

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR (e.g. tests/fuzz/corpus)\n", argv[0]);
    return 2;
  }
  g_out = argv[1];
  ::mkdir(g_out.c_str(), 0755);
  array_seeds();
  block_seeds();
  queue_seeds();
  registry_seeds();
  store_seeds();
  topic_seeds();
  std::printf("seeds written to %s\n", g_out.c_str());
  return 0;
}
