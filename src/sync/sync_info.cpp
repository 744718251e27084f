// hakobu — a sync object's summary for tools (hakobu/inspect.hpp), read from
// its file whatever its kind: kinds added later show as "kind N" with their
// raw word, never as an error. Kept apart from sync.cpp: it only reads. The
// file's size is checked by the rule handles use (read_sync_params), so a
// tool calls Corrupt exactly the files an open would refuse.
#include <algorithm>
#include <string>
#include <utility>

#include "domain/domain_state.hpp"
#include "domain/named_file.hpp"
#include "hakobu/inspect.hpp"
#include "platform/os.hpp"
#include "sync/sync_layout.hpp"

namespace hakobu {

namespace {

// Comparisons, not a switch over SyncKind: kinds added to the enum later must
// not make this file fail -Wswitch; they show as "kind N" until named here.
constexpr bool is_kind(std::uint32_t kind, detail::SyncKind known) noexcept {
  return kind == static_cast<std::uint32_t>(known);
}

std::string kind_name(std::uint32_t kind) {
  using detail::SyncKind;
  if (is_kind(kind, SyncKind::Lock)) return "lock";
  if (is_kind(kind, SyncKind::Event)) return "event";
  if (is_kind(kind, SyncKind::RLock)) return "rlock";
  if (is_kind(kind, SyncKind::Semaphore)) return "semaphore";
  if (is_kind(kind, SyncKind::BoundedSemaphore)) return "bounded_semaphore";
  if (is_kind(kind, SyncKind::Barrier)) return "barrier";
  if (is_kind(kind, SyncKind::Condition)) return "condition";
  if (is_kind(kind, SyncKind::SharedArray)) return "array";
  return "kind " + std::to_string(kind);
}

/// NumPy's name of `dtype` ("int64", "float32", "bool"...).
std::string dtype_name(DType dtype) {
  std::string base;
  switch (dtype.code) {
    case DTypeCode::Int: base = "int"; break;
    case DTypeCode::UInt: base = "uint"; break;
    case DTypeCode::Float: base = "float"; break;
    case DTypeCode::OpaqueHandle: base = "opaque"; break;
    case DTypeCode::BFloat: base = "bfloat"; break;
    case DTypeCode::Complex: base = "complex"; break;
    case DTypeCode::Bool: return dtype.lanes == 1 ? "bool" : "bool x" + std::to_string(dtype.lanes);
  }
  base += std::to_string(dtype.bits);
  if (dtype.lanes != 1) base += " x" + std::to_string(dtype.lanes);
  return base;
}

/// A lock word's holder (Lock, RLock, a Condition's own lock, an array's lock).
void read_lock_word(SyncSummary& out, detail::DomainState& domain) {
  out.held = (out.word & detail::kLockHeld) != 0;
  out.waiters = (out.word & detail::kLockWaiters) != 0;
  // A forged token reads as a dead or living slot, never out of range (sync_layout.hpp).
  out.holder_alive = out.held && domain.token_alive(out.word & detail::kLockTokenMask);
  if (!out.held) out.holder_pid = 0;  // what a past holder wrote
}

/// The slot table of a semaphore: who holds counts.
void read_semaphore_table(SyncSummary& out, const std::atomic<std::uint64_t>* table, detail::DomainState& domain) {
  const detail::RegistryHeader* registry = domain.registry();
  for (std::uint32_t slot = 0; slot < detail::kMaxProcesses; ++slot) {
    const std::uint64_t entry = table[slot].load(std::memory_order_relaxed);  // NOLINT(*-pointer-arithmetic)
    const auto counts = static_cast<std::uint32_t>(entry);
    if (counts == 0) continue;
    const std::uint32_t generation = static_cast<std::uint32_t>(entry >> 32U) & detail::kTokenGenerationMask;
    SyncHolder holder;
    holder.slot = slot;
    holder.counts = counts;
    holder.alive = domain.token_alive(detail::make_token(slot, generation));
    holder.pid = registry->processes[slot].pid.load(std::memory_order_relaxed);  // NOLINT(*-constant-array-index)
    out.holders.push_back(holder);
  }
}

}  // namespace

Result<SyncSummary, OpenError> inspect_sync(std::string_view name, std::string_view domain) {
  auto opened = detail::open_for_inspection("sync object", "s:", name, domain, detail::kSyncFileBytes);
  if (!opened) return std::move(opened).error();
  detail::DomainState& domain_state = *opened->domain;
  const int fd = opened->fd;
  const std::string& what = opened->what;
  const std::string& damaged = opened->damaged;
  const std::uint64_t file_size = opened->size;
  auto mapped = platform::map_shared(fd, detail::kSyncFileBytes);
  if (!mapped) {
    platform::close_fd(fd);
    return detail::to_open_error(mapped);
  }
  const auto* header = static_cast<const detail::SyncHeader*>(*mapped);
  // Each field is read once into a local: another process may rewrite the page meanwhile.
  const std::uint64_t magic = header->magic.load(std::memory_order_acquire);
  const std::uint32_t version = header->layout_version;
  const std::uint64_t file_bytes = header->file_bytes;
  SyncSummary out;
  out.name = std::string(name);
  out.domain = domain_state.name();
  out.kind = header->kind;
  out.creator_pid = header->creator_pid;
  out.file_bytes = file_bytes;
  out.holder_pid = header->holder_pid.load(std::memory_order_relaxed);
  out.owner_deaths = header->owner_deaths.load(std::memory_order_relaxed);
  const bool known = out.kind >= 1 && out.kind <= detail::kSyncKindLast;
  auto params = detail::read_sync_params(*header, out.kind);  // Corrupt for an unknown kind: not used then
  platform::unmap(*mapped, detail::kSyncFileBytes);
  if (magic != detail::kSyncMagic) {
    platform::close_fd(fd);
    return {OpenError::Corrupt, damaged};
  }
  if (version != detail::kSyncLayoutVersion) {
    platform::close_fd(fd);
    return detail::layout_mismatch(what, version, detail::kSyncLayoutVersion);
  }
  out.kind_name = kind_name(out.kind);
  // A known kind: header, parameters and file must agree on the size before
  // more than the first page is mapped (what an open checks). An unknown
  // kind's size is its own business: only its header page is read.
  std::uint64_t map_bytes = detail::kSyncFileBytes;
  if (known) {
    if (!params || params->file_bytes != file_bytes || file_size < file_bytes) {
      platform::close_fd(fd);
      return {OpenError::Corrupt, damaged + (params ? "" : " (" + params.error().message + ")")};
    }
    map_bytes = file_bytes;
  }
  auto whole = platform::map_shared(fd, map_bytes);
  platform::close_fd(fd);
  if (!whole) return detail::to_open_error(whole);
  const auto* base = static_cast<const std::byte*>(*whole);
  header = static_cast<const detail::SyncHeader*>(*whole);
  const std::byte* body = base + detail::kSyncBodyOffset;  // NOLINT(*-pointer-arithmetic)
  const auto* table = reinterpret_cast<const std::atomic<std::uint64_t>*>(base + detail::kSyncTableOffset);  // NOLINT
  out.word = header->word.load(std::memory_order_acquire);
  using detail::SyncKind;
  if (is_kind(out.kind, SyncKind::Lock) || is_kind(out.kind, SyncKind::SharedArray)) {
    read_lock_word(out, domain_state);
  } else if (is_kind(out.kind, SyncKind::RLock)) {
    read_lock_word(out, domain_state);
    const auto* rlock = reinterpret_cast<const detail::RLockBody*>(body);  // NOLINT
    out.depth = out.held ? rlock->depth.load(std::memory_order_relaxed) : 0;
  } else if (is_kind(out.kind, SyncKind::Event)) {
    out.is_set = (out.word & detail::kEventSet) != 0;
    out.waiters = (out.word & detail::kEventWaiters) != 0;
    out.holder_pid = 0;
  } else if (is_kind(out.kind, SyncKind::Semaphore) || is_kind(out.kind, SyncKind::BoundedSemaphore)) {
    out.value = out.word & detail::kSemCountMask;
    out.waiters = (out.word & detail::kSemWaiters) != 0;
    out.bound = params->bound;
    const auto* sem = reinterpret_cast<const detail::SemaphoreBody*>(body);  // NOLINT
    out.returned = sem->returned.load(std::memory_order_relaxed);
    out.maybe_leaked = sem->maybe_leaked.load(std::memory_order_relaxed);
    read_semaphore_table(out, table, domain_state);
    out.holder_pid = 0;
  } else if (is_kind(out.kind, SyncKind::Barrier)) {
    out.parties = params->parties;
    out.broken = (out.word & detail::kBarrierBroken) != 0;
    out.generation = (out.word >> detail::kBarrierGenShift) & detail::kBarrierGenMask;
    out.n_waiting = std::min(out.word & detail::kBarrierCountMask, out.parties);
    out.holder_pid = 0;
  } else if (is_kind(out.kind, SyncKind::Condition)) {
    out.lock_name = params->lock_name;
    if (out.lock_name.empty())
      read_lock_word(out, domain_state);  // its own lock
    else
      out.holder_pid = 0;
    const auto* cond = reinterpret_cast<const detail::ConditionBody*>(body);  // NOLINT
    out.waiters = (cond->seq.load(std::memory_order_relaxed) & detail::kCondWaiters) != 0;
  }
  if (is_kind(out.kind, SyncKind::SharedArray)) {
    out.dtype = dtype_name(params->dtype);
    out.shape = params->shape;
    out.data_bytes = params->data_bytes;
    if (out.shape.empty()) out.kind_name = "value";  // hakobu.Value: one number, no shape
  }
  platform::unmap(*whole, map_bytes);
  return out;
}

}  // namespace hakobu
