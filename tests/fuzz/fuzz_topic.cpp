// fuzz_topic — a topic file damaged by another process (its header, its
// subscriber entries, its ring slots) and the heap blocks of its messages, and
// every reader and writer of them: Topic::attach (header checks), subscribe
// (the entry table), try_get and get (cursors, slot control words, descriptors,
// blocks and attachments), publish of bytes, a loan and an array (claims,
// retiring, moving drop-oldest cursors), spin_until_ready, stats, lag, closing
// subscriptions (retiring behind them), and the drain of the last handle after
// unlink. Every call must return within its timeout: libFuzzer's -timeout
// reports a hang, and every loop over shared memory must be bounded.
//
// Each iteration builds a fresh domain fz<pid>t (16 MiB heap, no huge pages)
// with a topic "t" (capacity 8, history 2, 4 subscriber entries, inline
// capacity 64: slots of 128 bytes), two subscriptions (0: block, 1: drop
// oldest), and five messages published: 0 inline (40 B), 1 a 1000-byte copy,
// 2 a 3000-byte loan with a 500-byte loan attached, 3 a 6x6 float64 array,
// 4 inline; subscription 0 has received two of them.
// Known blocks: 0 message 1's, 1 message 2's, 2 its attachment, 3 message 3's.
//
// Input: records (fuzz_support.hpp's format):
//   op 0x00-0x3F: header word ((op & 63) modulo 56) = value (TopicHeader, 448 bytes)
//   op 0x40-0x43: subscriber entry (op & 3), then a u8 word index (modulo 8) = value
//                 (word 0 the cursor, 1 on_full | pid << 32, 2 dropped, 3 received, 4 joined_at)
//   op 0x44-0x47: subscriber entry (op & 3) cursor = make_cursor(u32 position, u8 state, who)
//   op 0x48-0x4F: slot (op & 7), then a u8 word index (modulo 16) = value (word 0 the
//                 control, 1 kind, 2 length, 3 block, 4.. inline bytes)
//   op 0x50-0x57: slot (op & 7) control = make_control(u32 position, u8 state, who)
//   op 0x60-0x9F: block ((op - 0x60) >> 4) field (op & 15) = value (BlockField;
//                 PayloadWord reads a u16 index first, AttachmentEntry a u8 index)
//   other ops:    ignored
// "who" is a u8: 0 this process's token, 1 a token of a process slot nobody has
// (a dead claimer), else a raw u32 that follows. Values may be block references
// (fuzz_support.hpp): a slot's block word set to one names a real block.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "channel/topic_file.hpp"
#include "domain/domain_state.hpp"
#include "fuzz_support.hpp"
#include "hakobu/hakobu.hpp"
#include "hakobu/topic.hpp"
#include "memory/heap.hpp"

namespace {

using namespace std::chrono_literals;
using hakobu::detail::SlotHeader;
using hakobu::detail::SubscriberEntry;
using hakobu::detail::TopicHeader;
using hakobu::fuzz::BlockField;

std::string g_domain;  // NOLINT(cppcoreguidelines-avoid-non-const-global-variables)

constexpr std::size_t kCapacity = 8;
constexpr std::size_t kEntries = 4;
constexpr std::size_t kSlotBytes = 128;
constexpr std::uint32_t kDeadToken = 1000U | (7U << 10U);  // process slot 1000: nobody's

[[noreturn]] void harness_broken(const std::string& what) {
  hakobu::fuzz::harness_broken("fuzz_topic", what);
}

hakobu::TopicOptions topic_options() {
  hakobu::TopicOptions options;
  options.capacity = kCapacity;
  options.history = 2;
  options.max_subscribers = kEntries;
  options.inline_capacity = 64;
  options.latency = hakobu::Latency::Sleep;
  options.domain = hakobu::fuzz::small_queue_options(g_domain, 1).domain;
  return options;
}

enum class Kind : std::uint8_t { Header, EntryWord, EntryCursor, SlotWord, SlotControl, Block };

struct Record {
  Kind kind = Kind::Header;
  unsigned target = 0;  // header word, entry, slot or block
  unsigned field = 0;   // word index or block field
  std::uint16_t index = 0;
  std::uint32_t position = 0;
  std::uint8_t state = 0;
  std::uint8_t who = 0;
  std::uint32_t raw_token = 0;
  std::uint64_t value = 0;
};

std::vector<Record> parse_records(hakobu::fuzz::Input& in) {
  std::vector<Record> out;
  while (!in.empty()) {
    const std::uint8_t op = in.u8();
    Record r;
    const auto read_claim = [&] {
      r.position = static_cast<std::uint32_t>(in.u16()) | (static_cast<std::uint32_t>(in.u16()) << 16U);
      r.state = in.u8();
      r.who = in.u8();
      if (r.who > 1) r.raw_token = static_cast<std::uint32_t>(in.u16()) | (static_cast<std::uint32_t>(in.u16()) << 16U);
    };
    if (op < 0x40) {
      r.kind = Kind::Header;
      r.target = (op & 63U) % (sizeof(TopicHeader) / 8);
    } else if (op < 0x44) {
      r.kind = Kind::EntryWord;
      r.target = op & 3U;
      r.field = in.u8() % 8U;
    } else if (op < 0x48) {
      r.kind = Kind::EntryCursor;
      r.target = op & 3U;
      read_claim();
      out.push_back(r);
      continue;
    } else if (op < 0x50) {
      r.kind = Kind::SlotWord;
      r.target = op & 7U;
      r.field = in.u8() % (kSlotBytes / 8);
    } else if (op < 0x58) {
      r.kind = Kind::SlotControl;
      r.target = op & 7U;
      read_claim();
      out.push_back(r);
      continue;
    } else if (op >= 0x60 && op < 0xA0) {
      r.kind = Kind::Block;
      r.target = (op - 0x60U) >> 4U;
      r.field = op & 15U;
      if (r.field >= static_cast<unsigned>(BlockField::Count)) continue;
      if (r.field == static_cast<unsigned>(BlockField::PayloadWord)) r.index = in.u16();
      if (r.field == static_cast<unsigned>(BlockField::AttachmentEntry)) r.index = in.u8();
    } else {
      continue;
    }
    r.value = in.u64();
    out.push_back(r);
  }
  return out;
}

struct Known {
  std::vector<std::uint64_t> offsets;
  std::vector<std::uint64_t> limits;
  std::vector<std::uint64_t> tables;
};

std::uint32_t token_of(const Record& r, std::uint32_t mine) {
  if (r.who == 0) return mine;
  if (r.who == 1) return kDeadToken;
  return r.raw_token;
}

void damage(const std::vector<Record>& records, const Known& known, hakobu::detail::DomainState& state) {
  hakobu::fuzz::MappedFile file("hakobu:" + g_domain + ":t:t");
  const std::size_t entries_at = sizeof(TopicHeader);
  const std::size_t slots_at = entries_at + kEntries * sizeof(SubscriberEntry);
  if (file.size() < slots_at + kCapacity * kSlotBytes) harness_broken("cannot map the topic file");
  std::byte* const base = file.data();
  for (const auto& r : records) {
    const std::uint64_t value = hakobu::fuzz::resolve(r.value, known.offsets);
    switch (r.kind) {
      case Kind::Header: std::memcpy(base + std::size_t{r.target} * 8, &value, 8); break;
      case Kind::EntryWord:
        std::memcpy(base + entries_at + r.target * sizeof(SubscriberEntry) + std::size_t{r.field} * 8, &value, 8);
        break;
      case Kind::EntryCursor: {
        const std::uint64_t cursor = hakobu::detail::make_cursor(
            r.position, static_cast<hakobu::detail::CursorState>(r.state & 3U), token_of(r, state.token()));
        std::memcpy(base + entries_at + r.target * sizeof(SubscriberEntry), &cursor, 8);
        break;
      }
      case Kind::SlotWord:
        std::memcpy(base + slots_at + r.target * kSlotBytes + std::size_t{r.field} * 8, &value, 8);
        break;
      case Kind::SlotControl: {
        const std::uint64_t control = hakobu::detail::make_control(
            r.position, static_cast<hakobu::detail::SlotState>(r.state & 3U), token_of(r, state.token()));
        std::memcpy(base + slots_at + r.target * kSlotBytes, &control, 8);
        break;
      }
      case Kind::Block:
        if (r.target >= known.offsets.size()) break;
        hakobu::fuzz::patch_block(state.heap().base(), state.registry()->heap_top.load(), known.offsets[r.target],
                                  known.limits[r.target], known.tables[r.target], static_cast<BlockField>(r.field),
                                  value, r.index);
        break;
    }
  }
}

void take(hakobu::Result<hakobu::TopicMessage, hakobu::GetError>& got) {
  if (!got) return;
  hakobu::fuzz::touch(got->bytes());
  (void)got->sequence();
  (void)got->missed();
  if (got->kind() == hakobu::MessageKind::Array) {
    if (auto view = got->array(); view && view->size() > 0) hakobu::fuzz::touch(view->data);
  }
  for (std::size_t i = 0; i < got->attachment_count() && i < 4; ++i) {
    if (auto bytes = got->attachment(i)) hakobu::fuzz::touch(*bytes);
  }
}

void receive(hakobu::Subscriber& subscriber) {
  for (std::size_t i = 0; i < 3 * kCapacity; ++i) {  // more than the ring holds: try_get must say Empty by then
    auto got = subscriber.try_get();
    take(got);
  }
  auto waited = subscriber.get(1ms);
  take(waited);
  (void)subscriber.lag();
  (void)subscriber.dropped();
  (void)subscriber.received();
  (void)subscriber.spin_until_ready(1us);
}

void publish(hakobu::Topic& topic) {
  const std::vector<std::byte> small(30, std::byte{0x5A});
  const std::vector<std::byte> large(700, std::byte{0xA5});
  (void)topic.publish(small, hakobu::MessageKind::Bytes, 0ns);
  (void)topic.publish(large, hakobu::MessageKind::Bytes, 1ms);
  if (auto loan = topic.loan(2000)) (void)topic.publish(*loan, 0ns);
  const double elements[12]{};
  const std::int64_t shape[] = {3, 4};
  (void)topic.publish_array(elements, hakobu::DType::of<double>(), shape, 0ns);
  (void)topic.stats();
}

void exercise(hakobu::Topic& topic, std::vector<hakobu::Subscriber>& subscribers) {
  if (auto joined = topic.subscribe({.on_full = hakobu::OnFull::Block, .history = 8})) {
    subscribers.push_back(std::move(joined).value());
  }
  for (auto& subscriber : subscribers) receive(subscriber);
  publish(topic);
  for (auto& subscriber : subscribers) receive(subscriber);
}

void run(const std::uint8_t* data, std::size_t size) {
  hakobu::fuzz::Input in(data, size);
  const std::vector<Record> records = parse_records(in);
  const auto options = topic_options();
  auto topic = hakobu::Topic::create("t", options);
  if (!topic) harness_broken(topic.error().message);
  auto state_or = hakobu::detail::DomainState::attach(options.domain);
  if (!state_or) harness_broken(state_or.error().message);
  const std::shared_ptr<hakobu::detail::DomainState> state = *state_or;
  auto& heap = state->heap();

  std::vector<hakobu::Subscriber> subscribers;
  for (const auto on_full : {hakobu::OnFull::Block, hakobu::OnFull::DropOldest}) {
    auto subscriber = topic->subscribe({.on_full = on_full});
    if (!subscriber) harness_broken(subscriber.error().message);
    subscribers.push_back(std::move(subscriber).value());
  }
  const std::vector<std::byte> inline_bytes(40, std::byte{0x11});
  const std::vector<std::byte> copied(1000, std::byte{0x22});
  auto loan = topic->loan(3000, hakobu::MessageKind::Bytes, 1);
  auto attached = topic->loan(500);
  if (!loan || !attached || !loan->attach(*attached)) harness_broken("loans");
  *attached = hakobu::Loan();
  const std::vector<double> elements(36, 1.5);
  const std::int64_t shape[] = {6, 6};
  if (!topic->publish(inline_bytes, hakobu::MessageKind::Bytes, 0ns) ||
      !topic->publish(copied, hakobu::MessageKind::Bytes, 0ns) || !topic->publish(*loan, 0ns) ||
      !topic->publish_array(elements.data(), hakobu::DType::of<double>(), shape, 0ns) ||
      !topic->publish(inline_bytes, hakobu::MessageKind::Object, 0ns)) {
    harness_broken("publishes");
  }
  for (int i = 0; i < 2; ++i) {
    if (!subscribers[0].try_get()) harness_broken("receive");
  }
  Known known;
  {
    hakobu::fuzz::MappedFile file("hakobu:" + g_domain + ":t:t");
    const std::size_t slots_at = sizeof(TopicHeader) + kEntries * sizeof(SubscriberEntry);
    if (file.size() < slots_at + kCapacity * kSlotBytes) harness_broken("the topic file's size");
    for (std::size_t i = 0; i < kCapacity; ++i) {
      const auto* slot = reinterpret_cast<const SlotHeader*>(file.data() + slots_at + i * kSlotBytes);  // NOLINT
      if (slot->block != 0) known.offsets.push_back(slot->block);
    }
  }
  if (known.offsets.size() != 3) harness_broken("three messages in blocks");
  const auto table = heap.attachments(known.offsets[1]);
  if (table.empty()) harness_broken("the loan's attachment");
  known.offsets.insert(known.offsets.begin() + 2, table[0].load());
  for (const auto b : known.offsets) {
    const auto* h = heap.header(b);
    known.limits.push_back(std::min(hakobu::detail::class_bytes(h->size_class), h->backed_bytes.load()));
    known.tables.push_back(h->attachment_table);
  }
  damage(records, known, *state);

  {
    auto other = hakobu::Topic::attach("t", options);
    if (other) {
      std::vector<hakobu::Subscriber> others;
      exercise(*other, others);
    }
  }
  exercise(*topic, subscribers);
  subscribers.clear();  // each closes its subscription, retiring behind it
  (void)topic->unlink();
  *topic = hakobu::Topic();  // the last handle drains the ring
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  g_domain = hakobu::fuzz::domain_name("t");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const hakobu::fuzz::LeakCheck leaks(g_domain);
  run(data, size);
  return 0;
}
