// hakobu — a store's summary for tools (hakobu/inspect.hpp): its keys, and for
// each the current value's version, size, kind and readers, read from the
// store file and the records it names. Kept apart from store.cpp: it only
// reads, and takes no reference (a snapshot for people, not a lookup).
//
// Everything is untrusted (store_file.hpp, "Hostile contents"): the header's
// capacity and size are checked against the file before the entries are read,
// every loop is bounded by that capacity, key lengths by kMaxKeyBytes, record
// offsets by Heap::checked_payload. A record may be freed and reused while we
// read it (we hold no reference): its magic and version bits are checked, and
// an entry whose record fails them is reported damaged, never followed further.
#include <algorithm>
#include <bit>
#include <cstring>
#include <string>
#include <utility>

#include "domain/domain_state.hpp"
#include "domain/named_file.hpp"
#include "hakobu/inspect.hpp"
#include "hakobu/message.hpp"
#include "memory/heap.hpp"
#include "platform/os.hpp"
#include "store/store_file.hpp"

namespace hakobu {

namespace {

std::string kind_name(std::uint32_t kind) {
  if (kind == static_cast<std::uint32_t>(MessageKind::Bytes)) return "bytes";
  if (kind == static_cast<std::uint32_t>(MessageKind::Array)) return "array";
  if (kind == static_cast<std::uint32_t>(MessageKind::Object)) return "object";
  return "kind " + std::to_string(kind);
}

/// The summary of one Ready entry with a value (`packed`, read once).
StoreKeySummary summarize_key(const detail::StoreEntry& entry, std::uint64_t packed, detail::Heap& heap) {
  StoreKeySummary key;
  detail::KeyCopy copy;
  if (detail::read_key(entry, copy) == 0 || copy.bytes == 0) {
    key.damaged = true;  // not stable, or no key: being rewritten, or damaged
    return key;
  }
  key.key = std::string(copy.view());
  const std::uint64_t record = detail::value_record(packed);
  const std::byte* payload = heap.checked_payload(record, detail::kRecordBytes);
  if (payload == nullptr) {
    key.damaged = true;
    return key;
  }
  detail::StoreRecord head{};
  std::memcpy(&head, payload, sizeof head);
  const std::uint32_t refs = heap.header(record)->refs.load(std::memory_order_acquire);
  if (head.magic != detail::kRecordMagic || (head.version & 0xFF'FFFFU) != detail::value_version_bits(packed) ||
      refs == 0 || head.size > heap.capacity()) {
    key.damaged = true;
    return key;
  }
  key.version = head.version;
  key.size = head.size;
  key.kind = kind_name(head.kind);
  key.readers = refs - 1;  // the store's own reference is one of them
  return key;
}

}  // namespace

Result<StoreSummary, OpenError> inspect_store(std::string_view name, std::string_view domain) {
  auto opened = detail::open_for_inspection("store", "st:", name, domain, sizeof(detail::StoreHeader));
  if (!opened) return std::move(opened).error();
  detail::DomainState& domain_state = *opened->domain;
  const int fd = opened->fd;
  const std::string& what = opened->what;
  const std::string& damaged = opened->damaged;
  const std::uint64_t file_size = opened->size;
  auto head_map = platform::map_shared(fd, sizeof(detail::StoreHeader));
  if (!head_map) {
    platform::close_fd(fd);
    return detail::to_open_error(head_map);
  }
  const auto* header = static_cast<const detail::StoreHeader*>(*head_map);
  const std::uint64_t magic = header->magic.load(std::memory_order_acquire);
  const std::uint32_t version = header->layout_version;
  const std::uint64_t capacity = header->capacity;
  const std::uint64_t file_bytes = header->file_bytes;
  StoreSummary out;
  out.name = std::string(name);
  out.domain = domain_state.name();
  out.creator_pid = header->creator_pid;
  out.unlinked = (header->flags.load(std::memory_order_acquire) & detail::kStoreUnlinked) != 0;
  platform::unmap(*head_map, sizeof(detail::StoreHeader));
  const bool shape_ok = capacity != 0 && capacity <= detail::kMaxStoreCapacity && std::has_single_bit(capacity) &&
                        file_bytes == detail::store_file_bytes(capacity) && file_bytes <= file_size;
  if (magic != detail::kStoreMagic || (version == detail::kStoreLayoutVersion && !shape_ok)) {
    platform::close_fd(fd);
    return {OpenError::Corrupt, damaged};
  }
  if (version != detail::kStoreLayoutVersion) {
    platform::close_fd(fd);
    return detail::layout_mismatch(what, version, detail::kStoreLayoutVersion);
  }
  out.capacity = capacity;
  auto mapped = platform::map_shared(fd, file_bytes);
  platform::close_fd(fd);
  if (!mapped) return detail::to_open_error(mapped);
  const auto* entries = reinterpret_cast<const detail::StoreEntry*>(  // NOLINT: the layout of store_file.hpp
      static_cast<const std::byte*>(*mapped) + sizeof(detail::StoreHeader));
  detail::Heap& heap = domain_state.heap();
  for (std::uint64_t i = 0; i < capacity; ++i) {   // bounded by the capacity checked above
    const detail::StoreEntry& entry = entries[i];  // NOLINT(cppcoreguidelines-pro-bounds-pointer-arithmetic)
    if (!detail::is_ready(entry.state.load(std::memory_order_acquire))) continue;
    const std::uint64_t packed = entry.current.load(std::memory_order_acquire);
    if (!detail::has_value(packed)) continue;  // a key without a value (erased, or retired)
    out.keys.push_back(summarize_key(entry, packed, heap));
    if (!out.keys.back().damaged) out.value_bytes += out.keys.back().size;
  }
  platform::unmap(*mapped, file_bytes);
  std::sort(out.keys.begin(), out.keys.end(),
            [](const StoreKeySummary& a, const StoreKeySummary& b) { return a.key < b.key; });
  return out;
}

}  // namespace hakobu
