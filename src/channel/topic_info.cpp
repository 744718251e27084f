// hakobu — a topic's summary for tools (hakobu/inspect.hpp): its settings and
// counters, the messages its ring holds, and each subscription's position,
// policy and counts, read from the topic file. Kept apart from topic.cpp: it
// only reads, takes no lock, no slot and no reference, and moves no cursor (a
// snapshot for people, not a subscription).
//
// Everything is untrusted (topic_file.hpp, last paragraph): the header's sizes
// are checked against each other and against the file's size before anything
// past the header is mapped; the loops over subscriber entries and slots are
// bounded by those checked sizes (the whole table: entries_used is not
// trusted); positions are compared modulo 2^32 and a lag is kept within
// [0, capacity]; a slot's message is counted only if its length fits
// its slot (inline) or its block passes Heap::check_block, and only if its
// control word did not change while it was read (it may be retired and reused
// meanwhile: we hold nothing).
#include <algorithm>
#include <string>
#include <utility>

#include "channel/ring.hpp"
#include "channel/topic_file.hpp"
#include "domain/domain_state.hpp"
#include "domain/named_file.hpp"
#include "hakobu/inspect.hpp"
#include "hakobu/message.hpp"
#include "hakobu/topic.hpp"
#include "memory/heap.hpp"
#include "platform/os.hpp"

namespace hakobu {

namespace {

using detail::CursorState;

std::string on_full_name(std::uint32_t on_full) {
  if (on_full == detail::kOnFullDropOldest) return "drop_oldest";
  if (on_full == detail::kOnFullBlock) return "block";
  return "on_full " + std::to_string(on_full);
}

std::string state_name(CursorState state) {
  switch (state) {
    case CursorState::Free: return "free";
    case CursorState::Joining: return "joining";
    case CursorState::Active: return "active";
    case CursorState::Reading: return "reading";
  }
  return "free";
}

/// The subscriptions of the table of `count` entries (checked), with their lag
/// behind the next position to publish (in a ring of `capacity`).
void summarize_subscribers(const detail::SubscriberEntry* entries, std::uint64_t count, std::uint64_t publish_pos,
                           std::uint64_t capacity, detail::DomainState& domain, TopicSummary& out) {
  for (std::uint64_t i = 0; i < count; ++i) {           // bounded by max_subscribers, checked
    const detail::SubscriberEntry& entry = entries[i];  // NOLINT(cppcoreguidelines-pro-bounds-pointer-arithmetic)
    const std::uint64_t cursor = entry.cursor.load(std::memory_order_acquire);
    const CursorState state = detail::cursor_state(cursor);
    if (cursor == 0 || state == CursorState::Free) continue;
    TopicSubscriberSummary sub;
    sub.entry = static_cast<std::uint32_t>(i);
    sub.pid = entry.pid.load(std::memory_order_relaxed);
    sub.alive = domain.token_alive(detail::control_token(cursor));
    sub.on_full = on_full_name(entry.on_full.load(std::memory_order_relaxed));
    sub.state = state_name(state);
    // As Subscriber::lag: behind the next position to publish, at most a ring.
    const std::int64_t behind = detail::position_diff(publish_pos, detail::control_position(cursor));
    sub.lag = behind <= 0 ? 0 : std::min(static_cast<std::uint64_t>(behind), capacity);
    sub.dropped = entry.dropped.load(std::memory_order_relaxed);
    sub.received = entry.received.load(std::memory_order_relaxed);
    out.subscribers.push_back(std::move(sub));
  }
}

/// The messages the ring of `capacity` slots of `slot_bytes` (checked) holds.
void summarize_slots(const std::byte* slots, std::uint64_t capacity, std::uint64_t slot_bytes,
                     std::uint64_t inline_capacity, const detail::Heap& heap, TopicSummary& out) {
  for (std::uint64_t i = 0; i < capacity; ++i) {                     // bounded by the capacity, checked
    const auto* slot = reinterpret_cast<const detail::SlotHeader*>(  // NOLINT: the layout of topic_file.hpp
        slots + i * slot_bytes);  // NOLINT(cppcoreguidelines-pro-bounds-pointer-arithmetic)
    const std::uint64_t control = slot->control.load(std::memory_order_acquire);
    const detail::SlotState state = detail::control_state(control);
    // A RETIRING slot still holds its message (it may become FULL again).
    if (state != detail::SlotState::Full && state != detail::kRetiring) continue;
    const std::uint8_t kind = slot->kind;
    const std::uint64_t length = slot->length;
    const std::uint64_t block = slot->block;
    // Re-read: a slot given back and reused while we read it is skipped (its
    // fields may mix two messages).
    if (slot->control.load(std::memory_order_acquire) != control) continue;
    if (kind == detail::kTombstone) {
      ++out.tombstones;
      continue;
    }
    const bool fits = block == 0 ? length <= inline_capacity : heap.check_block(block, length);
    if (!fits) {
      ++out.damaged_slots;
      continue;
    }
    ++out.retained;
    out.retained_bytes += length;  // each at most the heap's capacity: no overflow over 2^20 slots
  }
}

}  // namespace

Result<TopicSummary, OpenError> inspect_topic(std::string_view name, std::string_view domain) {
  auto opened = detail::open_for_inspection("topic", "t:", name, domain, sizeof(detail::TopicHeader));
  if (!opened) return std::move(opened).error();
  detail::DomainState& domain_state = *opened->domain;
  const int fd = opened->fd;
  auto head_map = platform::map_shared(fd, sizeof(detail::TopicHeader));
  if (!head_map) {
    platform::close_fd(fd);
    return detail::to_open_error(head_map);
  }
  const auto* header = static_cast<const detail::TopicHeader*>(*head_map);
  // The magic first, with acquire: what the creator wrote before it is then seen.
  const std::uint64_t magic = header->magic.load(std::memory_order_acquire);
  const std::uint32_t version = header->layout_version;
  // The rule Topic::open applies, on sizes read once: a tool calls Corrupt
  // exactly the files an open would refuse.
  const detail::TopicGeometry shape = detail::TopicGeometry::read(*header);
  const bool sizes_ok = shape.valid(opened->size);
  TopicSummary out;
  out.name = std::string(name);
  out.domain = domain_state.name();
  out.capacity = shape.capacity;
  out.history = shape.history;
  out.max_subscribers = shape.max_subscribers;
  out.inline_capacity = shape.inline_capacity;
  out.creator_pid = header->creator_pid;
  out.file_bytes = shape.file_bytes;
  const std::uint64_t slot_bytes = shape.slot_bytes;
  platform::unmap(*head_map, sizeof(detail::TopicHeader));
  if (magic != detail::kTopicMagic || (version == detail::kTopicLayoutVersion && !sizes_ok)) {
    platform::close_fd(fd);
    return {OpenError::Corrupt, opened->damaged};
  }
  if (version != detail::kTopicLayoutVersion) {
    platform::close_fd(fd);
    return detail::layout_mismatch(opened->what, version, detail::kTopicLayoutVersion);
  }
  // The sizes read once above are the ones checked: a header rewritten
  // meanwhile changes nothing of what we map or loop over.
  auto mapped = platform::map_shared(fd, out.file_bytes);
  platform::close_fd(fd);
  if (!mapped) return detail::to_open_error(mapped);
  const auto* base = static_cast<const std::byte*>(*mapped);
  const auto* live = reinterpret_cast<const detail::TopicHeader*>(base);  // NOLINT: the layout of topic_file.hpp
  out.unlinked = (live->flags.load(std::memory_order_acquire) & detail::kTopicUnlinked) != 0;
  out.published = live->publish_count.load(std::memory_order_relaxed);
  const std::uint64_t publish_pos = live->publish_pos.load(std::memory_order_acquire);
  const auto* entries = reinterpret_cast<const detail::SubscriberEntry*>(  // NOLINT: the layout of topic_file.hpp
      base + sizeof(detail::TopicHeader));  // NOLINT(cppcoreguidelines-pro-bounds-pointer-arithmetic)
  summarize_subscribers(entries, out.max_subscribers, publish_pos, out.capacity, domain_state, out);
  const std::byte* slots = base +
                           sizeof(detail::TopicHeader) +  // NOLINT(cppcoreguidelines-pro-bounds-pointer-arithmetic)
                           out.max_subscribers * sizeof(detail::SubscriberEntry);
  summarize_slots(slots, out.capacity, slot_bytes, out.inline_capacity, domain_state.heap(), out);
  platform::unmap(*mapped, out.file_bytes);
  return out;
}

}  // namespace hakobu
