// hakobu — a sync object's summary for tools (hakobu/inspect.hpp), read from
// its header whatever its kind: kinds added later show as "kind N" with their
// raw word, never as an error. Kept apart from sync.cpp: it only reads.
#include <string>
#include <utility>

#include "domain/domain_state.hpp"
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
  if (is_kind(kind, detail::SyncKind::Lock)) return "lock";
  if (is_kind(kind, detail::SyncKind::Event)) return "event";
  return "kind " + std::to_string(kind);
}

}  // namespace

Result<SyncSummary, OpenError> inspect_sync(std::string_view name, std::string_view domain) {
  if (auto why = validate_name(name); !why.empty()) {
    return {OpenError::InvalidName, "invalid sync object name '" + std::string(name) + "': " + why};
  }
  DomainOptions options;
  options.name = std::string(domain);
  options.collect_on_attach = false;  // a report shows dead processes; it does not reclaim them
  auto state = detail::DomainState::attach(options);
  if (!state) return std::move(state).error();
  detail::DomainState& domain_state = **state;
  const std::string what = "sync object '" + std::string(name) + "'";
  const detail::DomainFile file{domain_state.file_name("s:" + std::string(name)), true, what};
  auto fd = detail::open_domain_file(file, false);  // checks owner and mode before a byte is read
  if (!fd) {
    if (fd.error().code == OpenError::NotFound) {
      return {OpenError::NotFound, "no " + what + " in domain '" + domain_state.name() + "'"};
    }
    return std::move(fd).error();
  }
  const std::string damaged = what + " is damaged; remove it with `hakobu rm " + std::string(name) + "`";
  auto info = platform::file_info(*fd);
  if (!info || info->size < detail::kSyncFileBytes) {
    platform::close_fd(*fd);
    return info ? Error<OpenError>{OpenError::Corrupt, damaged} : detail::to_open_error(info);
  }
  auto mapped = platform::map_shared(*fd, detail::kSyncFileBytes);
  platform::close_fd(*fd);
  if (!mapped) return detail::to_open_error(mapped);
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
  out.word = header->word.load(std::memory_order_acquire);
  out.holder_pid = header->holder_pid.load(std::memory_order_relaxed);
  out.owner_deaths = header->owner_deaths.load(std::memory_order_relaxed);
  platform::unmap(*mapped, detail::kSyncFileBytes);
  if (magic != detail::kSyncMagic || file_bytes != detail::kSyncFileBytes) return {OpenError::Corrupt, damaged};
  if (version != detail::kSyncLayoutVersion) {
    return {OpenError::Incompatible, what + " has layout version " + std::to_string(version) + ", this library knows " +
                                         std::to_string(detail::kSyncLayoutVersion)};
  }
  out.kind_name = kind_name(out.kind);
  if (is_kind(out.kind, detail::SyncKind::Lock)) {
    out.held = (out.word & detail::kLockHeld) != 0;
    out.waiters = (out.word & detail::kLockWaiters) != 0;
    // A forged token reads as a dead or living slot, never out of range (sync_layout.hpp).
    out.holder_alive = out.held && domain_state.token_alive(out.word & detail::kLockTokenMask);
    if (!out.held) out.holder_pid = 0;  // what a past holder wrote
  } else if (is_kind(out.kind, detail::SyncKind::Event)) {
    out.is_set = (out.word & detail::kEventSet) != 0;
    out.waiters = (out.word & detail::kEventWaiters) != 0;
    out.holder_pid = 0;
  }
  return out;
}

}  // namespace hakobu
