// hakobu — named locks and events (rules and layout in sync_layout.hpp).
#include "hakobu/sync.hpp"

#include <fcntl.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <utility>

#include "domain/domain_state.hpp"
#include "platform/os.hpp"
#include "sync/sync_layout.hpp"

namespace hakobu {
namespace detail {

/// One handle's view of a sync file: the mapped page and the domain attachment
/// whose process token names this process as a holder.
struct SyncState {
  std::shared_ptr<DomainState> domain;
  std::string name;
  SyncHeader* header = nullptr;
  std::uint32_t epoch = 0;  // fork_epoch() when opened
  std::int32_t pid = 0;     // this process's, cached: getpid() is a system call

  SyncState() = default;
  SyncState(const SyncState&) = delete;
  SyncState& operator=(const SyncState&) = delete;
  ~SyncState() { platform::unmap(header, kSyncFileBytes); }

  [[nodiscard]] bool forked() const noexcept { return epoch != fork_epoch(); }
  [[nodiscard]] std::atomic<std::uint32_t>& word() const noexcept { return header->word; }
};

namespace {

const char* kind_name(SyncKind kind) noexcept {
  return kind == SyncKind::Lock ? "lock" : "event";
}

std::string describe_object(SyncKind kind, const std::string& name) {
  return std::string(kind_name(kind)) + " '" + name + "'";
}

// Maps a sync file and checks its header: everything in it is untrusted.
Result<void, OpenError> attach_file(SyncState& state, int fd, SyncKind kind) {
  const std::string what = describe_object(kind, state.name);
  const std::string damaged = what + " is damaged; remove it with `hakobu rm " + state.name + "`";
  auto info = platform::file_info(fd);
  if (!info) return to_open_error(info);
  if (info->links == 0) return {OpenError::NotFound, what + " was removed"};
  // A file of the right name but too short cannot be mapped safely (reading
  // past its end would be a SIGBUS).
  if (info->size < kSyncFileBytes) return {OpenError::Corrupt, damaged};
  auto mapped = platform::map_shared(fd, kSyncFileBytes);
  if (!mapped) return to_open_error(mapped);
  state.header = static_cast<SyncHeader*>(*mapped);
  const SyncHeader& h = *state.header;
  if (h.magic.load(std::memory_order_acquire) != kSyncMagic || h.file_bytes != kSyncFileBytes) {
    return {OpenError::Corrupt, damaged};
  }
  if (h.layout_version != kSyncLayoutVersion) {
    return {OpenError::Incompatible, what + " has layout version " + std::to_string(h.layout_version) +
                                         ", this library knows " + std::to_string(kSyncLayoutVersion)};
  }
  if (h.kind != static_cast<std::uint32_t>(kind)) {
    const bool known =
        h.kind == static_cast<std::uint32_t>(SyncKind::Lock) || h.kind == static_cast<std::uint32_t>(SyncKind::Event);
    return {OpenError::Incompatible,
            "'" + state.name + "' in domain '" + state.domain->name() + "' is " +
                (known ? std::string("a ") + kind_name(static_cast<SyncKind>(h.kind)) : std::string("damaged")) +
                ", not a " + kind_name(kind)};
  }
  return {};
}

// Builds the file under a temporary name and publishes it with link(), so an
// opener sees a complete object under its name or none.
Result<void, OpenError> create_file(SyncState& state, const std::string& file, SyncKind kind) {
  const std::string temporary = state.domain->temporary_file_name(state.name);
  const std::string what = describe_object(kind, state.name);
  auto created = open_domain_file({temporary, true, what}, true);
  if (!created) return std::move(created).error();
  const int fd = *created;
  auto discard = [&](Error<OpenError> error) -> Result<void, OpenError> {
    (void)platform::shm_remove(temporary);
    platform::close_fd(fd);
    return error;
  };
  if (auto backed = platform::allocate(fd, 0, kSyncFileBytes); !backed) {
    auto error = to_open_error(backed);
    error.message = "creating " + what + ": " + error.message;
    return discard(std::move(error));
  }
  auto mapped = platform::map_shared(fd, kSyncFileBytes);
  if (!mapped) return discard(to_open_error(mapped));
  auto* header = static_cast<SyncHeader*>(*mapped);
  // The file is fresh (zero-filled); only the identity needs writing.
  header->layout_version = kSyncLayoutVersion;
  header->kind = static_cast<std::uint32_t>(kind);
  header->file_bytes = kSyncFileBytes;
  header->creator_token = state.domain->token();
  header->creator_pid = platform::process_id();
  header->magic.store(kSyncMagic, std::memory_order_release);
  auto published = state.domain->publish_file(temporary, file, "'" + state.name + "'");
  platform::close_fd(fd);  // no locks live on a sync file: the mapping is all we keep
  if (!published) {
    platform::unmap(header, kSyncFileBytes);
    return std::move(published).error();
  }
  state.header = header;
  state.domain->object_created();
  return {};
}

Result<std::shared_ptr<SyncState>, OpenError> open_sync(std::string_view name, OpenMode mode,
                                                        const SyncOptions& options, SyncKind kind) {
  if (auto why = validate_name(name); !why.empty()) {
    return {OpenError::InvalidName,
            "invalid " + std::string(kind_name(kind)) + " name '" + std::string(name) + "': " + why};
  }
  if (mode > OpenMode::CreateExclusive) {
    return {OpenError::InvalidArgument, "mode must be CreateOrAttach, AttachOnly or CreateExclusive"};
  }
  auto domain = DomainState::attach(options.domain);
  if (!domain) return std::move(domain).error();
  auto state = std::make_shared<SyncState>();
  state->domain = std::move(*domain);
  state->name = std::string(name);
  state->epoch = fork_epoch();
  state->pid = platform::process_id();
  const std::string file = state->domain->file_name("s:" + state->name);
  const DomainFile named{file, true, describe_object(kind, state->name)};
  // Bounded: a name removed and made again between our attempts sends us round.
  for (int attempt = 0; attempt < 100; ++attempt) {
    if (mode != OpenMode::CreateExclusive) {
      auto fd = open_domain_file(named, false);  // checks owner and mode before we read a byte
      if (fd) {
        auto attached = attach_file(*state, *fd, kind);
        platform::close_fd(*fd);
        if (attached) return state;
        platform::unmap(state->header, kSyncFileBytes);
        state->header = nullptr;
        if (attached.error().code != OpenError::NotFound || mode == OpenMode::AttachOnly) {
          return std::move(attached).error();
        }
        continue;
      }
      if (fd.error().code != OpenError::NotFound) return std::move(fd).error();
      if (mode == OpenMode::AttachOnly) {
        return {OpenError::NotFound, "no " + std::string(kind_name(kind)) + " '" + state->name + "' in domain '" +
                                         state->domain->name() + "'"};
      }
    }
    auto created = create_file(*state, file, kind);
    if (created) return state;
    if (created.error().code != OpenError::AlreadyExists || mode == OpenMode::CreateExclusive) {
      return std::move(created).error();
    }
  }
  return {OpenError::SystemError, "'" + state->name + "' is being created and removed too often to open"};
}

Result<void, UnlinkError> remove_sync(std::string_view name, std::string_view domain) {
  if (auto why = validate_name(name); !why.empty()) {
    return {UnlinkError::InvalidName, "invalid name '" + std::string(name) + "': " + why};
  }
  DomainOptions options;
  options.name = domain.empty() ? default_domain_name() : std::string(domain);
  if (auto why = validate_name(options.name); !why.empty()) {
    return {UnlinkError::InvalidName, "invalid domain name '" + options.name + "': " + why};
  }
  // Looked for before attaching: removing a name that is not there must not
  // create its domain (a sync object keeps its domain, so none means none).
  const std::string path =
      std::string(platform::shm_directory()) + "/" + Domain::file_prefix(options.name) + "s:" + std::string(name);
  if (auto info = platform::path_info(path); !info && info.error().code == ENOENT) {
    return {UnlinkError::NotFound, "no sync object '" + std::string(name) + "' in domain '" + options.name + "'"};
  }
  auto state = DomainState::attach(options);
  if (!state) {
    const auto code = state.error().code;
    return {code == OpenError::InvalidName        ? UnlinkError::InvalidName
            : code == OpenError::PermissionDenied ? UnlinkError::PermissionDenied
                                                  : UnlinkError::SystemError,
            state.error().message};
  }
  if (auto r = platform::shm_remove((*state)->file_name("s:" + std::string(name))); !r) {
    if (r.error().code == ENOENT) {
      return {UnlinkError::NotFound, "no sync object '" + std::string(name) + "' in domain '" + (*state)->name() + "'"};
    }
    return {
        r.error().code == EACCES || r.error().code == EPERM ? UnlinkError::PermissionDenied : UnlinkError::SystemError,
        r.error().message};
  }
  (*state)->object_removed();
  return {};
}

// --- the lock ---------------------------------------------------------------------

/// Deadline on the monotonic clock for a timeout; negative: none.
std::int64_t deadline_after(std::chrono::nanoseconds timeout) noexcept {
  const std::int64_t now = platform::monotonic_ns();
  const std::int64_t ns = timeout.count();
  if (ns <= 0) return now;
  return ns >= INT64_MAX - now ? -1 : now + ns;
}

void note_holder(SyncState& state) noexcept {
  state.header->holder_pid.store(state.pid, std::memory_order_relaxed);
}

// `deadline`: monotonic ns, negative for none; a deadline already past still
// makes one attempt (and one liveness check of a holder).
Result<Acquired, AcquireError> lock_acquire(SyncState& state, std::int64_t deadline, bool blocking) noexcept {
  if (state.forked()) {
    return {AcquireError::Forked, "lock '" + state.name + "' was opened by the parent of this forked process"};
  }
  const std::uint32_t me = kLockHeld | (state.domain->token() & kLockTokenMask);
  std::atomic<std::uint32_t>& word = state.word();
  std::uint32_t expected = 0;
  if (word.compare_exchange_strong(expected, me, std::memory_order_acquire, std::memory_order_relaxed)) {
    note_holder(state);
    return Acquired::Clean;
  }
  // Contended. Once we have slept, others may sleep too: we then take the
  // lock with kLockWaiters set so that our release wakes the next one.
  std::uint32_t waiters_flag = 0;
  std::int64_t next_liveness_check = 0;  // at once
  // Every round re-reads the clock: whatever another process writes into the
  // word, a blocking call returns at its deadline and a try gives up after
  // kTryRounds failed compare-and-swaps.
  constexpr int kTryRounds = 64;
  for (int round = 0;; ++round) {
    const std::int64_t now = platform::monotonic_ns();
    const bool past = deadline >= 0 && now >= deadline;
    if (round > 0 && (blocking ? past : round >= kTryRounds)) break;
    std::uint32_t w = word.load(std::memory_order_relaxed);
    if ((w & kLockHeld) == 0) {
      // Free (or a word no release leaves: treated as free).
      if (word.compare_exchange_weak(w, me | waiters_flag, std::memory_order_acquire, std::memory_order_relaxed)) {
        note_holder(state);
        return Acquired::Clean;
      }
      continue;
    }
    if (now >= next_liveness_check) {
      next_liveness_check = now + kLivenessPollNs;
      if (!state.domain->token_alive(w & kLockTokenMask)) {
        // The holder died: exactly one compare-and-swap makes its heir.
        if (word.compare_exchange_strong(w, me | (w & kLockWaiters), std::memory_order_acquire,
                                         std::memory_order_relaxed)) {
          note_holder(state);
          state.header->owner_deaths.fetch_add(1, std::memory_order_relaxed);
          return Acquired::OwnerDied;
        }
        next_liveness_check = 0;  // the word changed: look again at once
        continue;
      }
    }
    if (!blocking || past) break;
    if ((w & kLockWaiters) == 0 &&
        !word.compare_exchange_weak(w, w | kLockWaiters, std::memory_order_relaxed, std::memory_order_relaxed)) {
      continue;
    }
    waiters_flag = kLockWaiters;
    // Sleep until woken, the deadline, or the next look at the holder's life.
    const std::int64_t wake_at = deadline >= 0 ? std::min(deadline, next_liveness_check) : next_liveness_check;
    (void)platform::futex_wait(&word, w | kLockWaiters, wake_at);
  }
  if (!blocking) return {AcquireError::WouldBlock, "lock '" + state.name + "' is held"};
  return {AcquireError::Timeout, "lock '" + state.name + "' stayed held for the whole timeout"};
}

}  // namespace
}  // namespace detail

std::string_view to_string(Acquired value) noexcept {
  switch (value) {
    case Acquired::Clean: return "Clean";
    case Acquired::OwnerDied: return "OwnerDied";
  }
  return "?";
}

std::string_view to_string(AcquireError code) noexcept {
  switch (code) {
    case AcquireError::WouldBlock: return "WouldBlock";
    case AcquireError::Timeout: return "Timeout";
    case AcquireError::Forked: return "Forked";
  }
  return "?";
}

std::string_view to_string(ReleaseError code) noexcept {
  switch (code) {
    case ReleaseError::NotHeld: return "NotHeld";
    case ReleaseError::NotOwner: return "NotOwner";
    case ReleaseError::Forked: return "Forked";
  }
  return "?";
}

// --- Lock -------------------------------------------------------------------------

Result<Lock, OpenError> Lock::open(std::string_view name, OpenMode mode, const SyncOptions& options) {
  auto state = detail::open_sync(name, mode, options, detail::SyncKind::Lock);
  if (!state) return std::move(state).error();
  Lock lock;
  lock.state_ = std::move(*state);
  return lock;
}

Result<void, UnlinkError> Lock::remove(std::string_view name, std::string_view domain) {
  return detail::remove_sync(name, domain);
}

Lock::Lock(Lock&&) noexcept = default;
Lock& Lock::operator=(Lock&&) noexcept = default;
Lock::~Lock() = default;

Result<Acquired, AcquireError> Lock::try_acquire() noexcept {
  return detail::lock_acquire(*state_, platform::monotonic_ns(), false);
}

Result<Acquired, AcquireError> Lock::acquire() noexcept {
  return detail::lock_acquire(*state_, -1, true);
}

Result<Acquired, AcquireError> Lock::acquire_for(std::chrono::nanoseconds timeout) noexcept {
  return detail::lock_acquire(*state_, detail::deadline_after(timeout), true);
}

Result<void, ReleaseError> Lock::release() noexcept {
  detail::SyncState& state = *state_;
  if (state.forked()) {
    return {ReleaseError::Forked, "lock '" + state.name + "' was opened by the parent of this forked process"};
  }
  const std::uint32_t me = detail::kLockHeld | (state.domain->token() & detail::kLockTokenMask);
  std::atomic<std::uint32_t>& word = state.word();
  std::uint32_t w = word.load(std::memory_order_relaxed);
  // Bounded: while we hold the lock only kLockWaiters can change under us, so
  // a second failure means a hostile writer; we give up rather than spin.
  for (int attempt = 0; attempt < 64; ++attempt) {
    if ((w & detail::kLockHeld) == 0) return {ReleaseError::NotHeld, "lock '" + state.name + "' is not held"};
    if ((w & ~detail::kLockWaiters) != me) {
      return {ReleaseError::NotOwner, "lock '" + state.name + "' is held by another process"};
    }
    state.header->holder_pid.store(0, std::memory_order_relaxed);
    if (word.compare_exchange_weak(w, 0, std::memory_order_release, std::memory_order_relaxed)) {
      if ((w & detail::kLockWaiters) != 0) platform::futex_wake(&word, 1);
      return {};
    }
  }
  return {ReleaseError::NotOwner, "lock '" + state.name + "' keeps changing under its holder"};
}

LockInfo Lock::info() const noexcept {
  const detail::SyncState& state = *state_;
  const std::uint32_t w = state.word().load(std::memory_order_relaxed);
  LockInfo out;
  out.held = (w & detail::kLockHeld) != 0;
  out.waiters = (w & detail::kLockWaiters) != 0;
  if (out.held) {
    out.holder_slot = w & ((1U << detail::kTokenSlotBits) - 1);
    out.holder_pid = state.header->holder_pid.load(std::memory_order_relaxed);
    out.held_by_this_process =
        !state.forked() && (w & detail::kLockTokenMask) == (state.domain->token() & detail::kLockTokenMask);
  }
  out.owner_deaths = state.header->owner_deaths.load(std::memory_order_relaxed);
  return out;
}

const std::string& Lock::name() const noexcept {
  return state_->name;
}

// --- Event ------------------------------------------------------------------------

Result<Event, OpenError> Event::open(std::string_view name, OpenMode mode, const SyncOptions& options) {
  auto state = detail::open_sync(name, mode, options, detail::SyncKind::Event);
  if (!state) return std::move(state).error();
  Event event;
  event.state_ = std::move(*state);
  return event;
}

Result<void, UnlinkError> Event::remove(std::string_view name, std::string_view domain) {
  return detail::remove_sync(name, domain);
}

Event::Event(Event&&) noexcept = default;
Event& Event::operator=(Event&&) noexcept = default;
Event::~Event() = default;

void Event::set() noexcept {
  std::atomic<std::uint32_t>& word = state_->word();
  const std::uint32_t old = word.exchange(detail::kEventSet, std::memory_order_release);
  if ((old & detail::kEventWaiters) != 0) platform::futex_wake(&word, INT_MAX);
}

void Event::clear() noexcept {
  state_->word().fetch_and(~detail::kEventSet, std::memory_order_relaxed);
}

bool Event::is_set() const noexcept {
  return (state_->word().load(std::memory_order_acquire) & detail::kEventSet) != 0;
}

void Event::wait() noexcept {
  (void)wait_for(std::chrono::nanoseconds::max());
}

bool Event::wait_for(std::chrono::nanoseconds timeout) noexcept {
  const std::int64_t deadline = detail::deadline_after(timeout);
  std::atomic<std::uint32_t>& word = state_->word();
  for (;;) {
    std::uint32_t w = word.load(std::memory_order_acquire);
    if ((w & detail::kEventSet) != 0) return true;
    if (deadline >= 0 && platform::monotonic_ns() >= deadline) return false;
    if ((w & detail::kEventWaiters) == 0 &&
        !word.compare_exchange_weak(w, w | detail::kEventWaiters, std::memory_order_relaxed,
                                    std::memory_order_relaxed)) {
      continue;
    }
    (void)platform::futex_wait(&word, w | detail::kEventWaiters, deadline);
  }
}

const std::string& Event::name() const noexcept {
  return state_->name;
}

}  // namespace hakobu
