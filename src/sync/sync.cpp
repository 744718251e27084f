// hakobu — named locks, recursive locks, events, semaphores, barriers,
// conditions and shared arrays (rules and layout in sync_layout.hpp).
#include "hakobu/sync.hpp"

#include <fcntl.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <functional>
#include <limits>
#include <utility>
#include <vector>

#include "domain/domain_state.hpp"
#include "domain/named_file.hpp"
#include "platform/os.hpp"
#include "sync/sync_layout.hpp"

namespace hakobu {
namespace detail {

/// One handle's view of a sync file: the mapped page and the domain attachment
/// whose process token names this process as a holder.
struct SyncState {
  std::shared_ptr<DomainState> domain;
  std::string name;
  NamedFile file{std::nullopt};  // no lock bytes: nothing in a sync file needs draining
  SyncHeader* header = nullptr;  // file.base(), once created or attached
  std::uint32_t epoch = 0;       // fork_epoch() when opened
  std::int32_t pid = 0;          // this process's, cached: getpid() is a system call
  SyncKind kind = SyncKind::Lock;
  // The file's parameters, copied at attach (never re-read from shared memory).
  std::uint32_t bound = 0;    // BoundedSemaphore
  std::uint32_t parties = 0;  // Barrier
  DType dtype{};              // SharedArray
  std::vector<std::int64_t> shape;
  std::uint64_t elements = 0;
  std::uint64_t data_bytes = 0;
  std::string lock_name;  // Condition: the bound Lock's name, empty for its own

  SyncState() = default;
  SyncState(const SyncState&) = delete;
  SyncState& operator=(const SyncState&) = delete;
  ~SyncState() = default;

  [[nodiscard]] bool forked() const noexcept { return epoch != fork_epoch(); }
  [[nodiscard]] std::atomic<std::uint32_t>& word() const noexcept { return header->word; }
  [[nodiscard]] std::byte* base() const noexcept { return reinterpret_cast<std::byte*>(header); }  // NOLINT
  template <class Body>
  [[nodiscard]] Body& body() const noexcept {
    return *reinterpret_cast<Body*>(base() + kSyncBodyOffset);  // NOLINT
  }
  /// The per-process-slot table (semaphores, barriers): kMaxProcesses entries.
  [[nodiscard]] std::atomic<std::uint64_t>* table() const noexcept {
    return reinterpret_cast<std::atomic<std::uint64_t>*>(base() + kSyncTableOffset);  // NOLINT
  }
  [[nodiscard]] std::byte* data() const noexcept { return base() + kSyncTableOffset; }  // NOLINT
};

/// What an open asks of its kind: the size and contents of a new file, and
/// whether an existing file's parameters (copied into the state) match.
struct SyncSpec {
  SyncKind kind = SyncKind::Lock;
  std::uint64_t file_bytes = kSyncFileBytes;
  std::function<void(std::byte* base)> init;                         // before magic; may be empty
  std::function<Result<void, OpenError>(const SyncState&)> matches;  // may be empty
};

namespace {

const char* kind_name(SyncKind kind) noexcept {
  switch (kind) {
    case SyncKind::Lock: return "lock";
    case SyncKind::Event: return "event";
    case SyncKind::RLock: return "recursive lock";
    case SyncKind::Semaphore: return "semaphore";
    case SyncKind::BoundedSemaphore: return "bounded semaphore";
    case SyncKind::Barrier: return "barrier";
    case SyncKind::Condition: return "condition";
    case SyncKind::SharedArray: return "shared array";
  }
  return "sync object";
}

bool known_kind(std::uint32_t kind) noexcept {
  return kind >= 1 && kind <= kSyncKindLast;
}

/// Elements and bytes of `dtype` x `shape`; empty message if valid.
std::string array_extent(DType dtype, std::span<const std::int64_t> shape, std::uint64_t& elements,
                         std::uint64_t& bytes) {
  if (dtype.bits == 0 || dtype.bits % 8 != 0 || dtype.lanes == 0 ||
      static_cast<std::uint8_t>(dtype.code) > static_cast<std::uint8_t>(DTypeCode::Bool)) {
    return "a dtype of whole bytes (code 0..6, bits a multiple of 8, lanes >= 1)";
  }
  if (shape.size() > kMaxArrayDimsInFile) return "at most 64 dimensions";
  std::uint64_t n = 1;
  for (const std::int64_t extent : shape) {
    if (extent < 0) return "extents >= 0";
    const auto e = static_cast<std::uint64_t>(extent);
    if (e != 0 && n > kMaxArrayDataBytes / e) return "at most 2^40 bytes";
    n *= e;
  }
  if (n > kMaxArrayDataBytes / dtype.itemsize()) return "at most 2^40 bytes";
  elements = n;
  bytes = n * dtype.itemsize();
  return {};
}

}  // namespace

// Reads each parameter once from the first page (all untrusted) and returns
// the file size they imply; an error when they make no sense. Shared with the
// inspector (sync_info.cpp), so that tools accept exactly the files handles do.
Result<SyncParams, OpenError> read_sync_params(const SyncHeader& header, std::uint32_t file_kind) {
  if (!known_kind(file_kind)) return {OpenError::Corrupt, "its kind is unknown"};
  const auto* base = reinterpret_cast<const std::byte*>(&header);  // NOLINT
  auto body = [&]<class Body>(std::type_identity<Body>) -> const Body& {
    return *reinterpret_cast<const Body*>(base + kSyncBodyOffset);  // NOLINT
  };
  SyncParams out;
  out.file_bytes = kSyncFileBytes;
  switch (static_cast<SyncKind>(file_kind)) {
    case SyncKind::Lock:
    case SyncKind::Event:
    case SyncKind::RLock: return out;
    case SyncKind::Condition: {
      const auto& b = body(std::type_identity<ConditionBody>{});
      const std::uint32_t n = b.lock_name_bytes;
      if (n > sizeof b.lock_name) return {OpenError::Corrupt, "its lock name is too long"};
      out.lock_name.assign(static_cast<const char*>(b.lock_name), n);
      return out;
    }
    case SyncKind::Semaphore:
    case SyncKind::BoundedSemaphore: {
      out.bound = file_kind == static_cast<std::uint32_t>(SyncKind::BoundedSemaphore)
                      ? body(std::type_identity<SemaphoreBody>{}).bound
                      : 0;
      if (out.bound > kSemCountMask) return {OpenError::Corrupt, "its bound is out of range"};
      out.file_bytes = kSyncTableOffset + kSyncTableBytes;
      return out;
    }
    case SyncKind::Barrier: {
      out.parties = body(std::type_identity<BarrierBody>{}).parties;
      if (out.parties == 0 || out.parties > kMaxBarrierParties) {
        return {OpenError::Corrupt, "its parties are out of range"};
      }
      out.file_bytes = kSyncTableOffset + kSyncTableBytes;
      return out;
    }
    case SyncKind::SharedArray: {
      const auto& b = body(std::type_identity<ArrayBody>{});
      const std::uint32_t ndim = b.ndim;
      if (ndim > kMaxArrayDimsInFile) return {OpenError::Corrupt, "it has too many dimensions"};
      out.dtype = DType{static_cast<DTypeCode>(b.code), b.bits, b.lanes};
      out.shape.assign(static_cast<const std::int64_t*>(b.shape), static_cast<const std::int64_t*>(b.shape) + ndim);
      std::uint64_t bytes = 0;
      if (!array_extent(out.dtype, out.shape, out.elements, bytes).empty() || bytes != b.data_bytes) {
        return {OpenError::Corrupt, "its dtype and shape do not match its size"};
      }
      out.data_bytes = bytes;
      out.file_bytes = kSyncTableOffset + bytes;
      return out;
    }
  }
  return {OpenError::Corrupt, "its kind is unknown"};
}

namespace {

// Copies the kind's parameters from the file into `state` and returns the
// file size they imply.
Result<std::uint64_t, OpenError> read_params(SyncState& state) {
  auto params = read_sync_params(*state.header, static_cast<std::uint32_t>(state.kind));
  if (!params) return std::move(params).error();
  state.bound = params->bound;
  state.parties = params->parties;
  state.lock_name = std::move(params->lock_name);
  state.dtype = params->dtype;
  state.shape = std::move(params->shape);
  state.elements = params->elements;
  state.data_bytes = params->data_bytes;
  return params->file_bytes;
}

std::string describe_object(SyncKind kind, const std::string& name) {
  return std::string(kind_name(kind)) + " '" + name + "'";
}

// Attaches the sync file open()ed in state.file (the protocol of
// named_file.hpp) and checks its header: everything in it is untrusted.
Result<void, OpenError> attach_file(SyncState& state, const SyncSpec& spec) {
  const SyncKind kind = spec.kind;
  const std::string what = describe_object(kind, state.name);
  const std::string damaged = what + " is damaged; remove it with `hakobu rm " + state.name + "`";
  // The first page: header and the kind's body.
  NamedFile::AttachRules rules = NamedFile::rules_for(what, state.name, kSyncFileBytes);
  rules.check_header = [&](const std::byte* base, std::uint64_t file_size) -> Result<std::uint64_t, OpenError> {
    // read_params reads the kind's body through state.header.
    state.header = reinterpret_cast<SyncHeader*>(const_cast<std::byte*>(base));  // NOLINT
    const SyncHeader& h = *state.header;
    if (h.magic.load(std::memory_order_acquire) != kSyncMagic) return {OpenError::Corrupt, damaged};
    if (h.layout_version != kSyncLayoutVersion) {
      return layout_mismatch(what, h.layout_version, kSyncLayoutVersion);
    }
    const std::uint32_t file_kind = h.kind;
    if (file_kind != static_cast<std::uint32_t>(kind)) {
      return {OpenError::Incompatible,
              "'" + state.name + "' in domain '" + state.domain->name() + "' is " +
                  (known_kind(file_kind) ? std::string("a ") + kind_name(static_cast<SyncKind>(file_kind))
                                         : std::string("damaged")) +
                  ", not a " + kind_name(kind)};
    }
    state.kind = kind;
    auto size = read_params(state);
    if (!size) return {OpenError::Corrupt, damaged + " (" + size.error().message + ")"};
    // The size the kind implies, the header's and the file's must agree before
    // more than the first page is mapped.
    if (h.file_bytes != *size || file_size < *size) return {OpenError::Corrupt, damaged};
    return *size;
  };
  auto attached = state.file.attach(rules);
  state.header = attached ? reinterpret_cast<SyncHeader*>(state.file.base()) : nullptr;  // NOLINT
  if (!attached) return std::move(attached).error();
  state.file.close_descriptor();  // no locks live on a sync file: the mapping is all we keep
  if (spec.matches) return spec.matches(state);
  return {};
}

// Builds the file under a temporary name and publishes it with link()
// (named_file.hpp), so an opener sees a complete object under its name or none.
Result<void, OpenError> create_file(SyncState& state, const std::string& file, const SyncSpec& spec) {
  const SyncKind kind = spec.kind;
  const std::uint64_t bytes = spec.file_bytes;
  const std::string what = describe_object(kind, state.name);
  const std::uint32_t token = state.domain->token();
  auto write_header = [&](std::byte* base) {
    // The file is fresh (zero-filled); only the identity and the kind's
    // parameters need writing, all before magic.
    if (spec.init) spec.init(base);
    auto* header = reinterpret_cast<SyncHeader*>(base);  // NOLINT(cppcoreguidelines-pro-type-reinterpret-cast)
    header->layout_version = kSyncLayoutVersion;
    header->kind = static_cast<std::uint32_t>(kind);
    header->file_bytes = bytes;
    header->creator_token = token;
    header->creator_pid = platform::process_id();
    header->magic.store(kSyncMagic, std::memory_order_release);
  };
  auto created = state.file.create(*state.domain, state.name, file, what, bytes, write_header, "'" + state.name + "'");
  if (!created) return std::move(created).error();
  state.file.close_descriptor();  // no locks live on a sync file: the mapping is all we keep
  state.header =
      reinterpret_cast<SyncHeader*>(state.file.base());  // NOLINT(cppcoreguidelines-pro-type-reinterpret-cast)
  state.kind = kind;
  state.domain->object_created();
  // Our own parameters, read back as an attacher would (they cannot fail).
  if (auto size = read_params(state); !size || *size != bytes) {
    return {OpenError::Corrupt, what + " was changed while it was being created"};
  }
  return {};
}

Result<std::shared_ptr<SyncState>, OpenError> open_sync(std::string_view name, OpenMode mode,
                                                        const SyncOptions& options, const SyncSpec& spec) {
  const SyncKind kind = spec.kind;
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
      auto opened = state->file.open(named);  // checks owner and mode before we read a byte
      if (opened) {
        auto attached = attach_file(*state, spec);
        if (attached) return state;
        if (attached.error().code != OpenError::NotFound || mode == OpenMode::AttachOnly) {
          return std::move(attached).error();
        }
        continue;
      }
      if (opened.error().code != OpenError::NotFound) return std::move(opened).error();
      if (mode == OpenMode::AttachOnly) {
        return {OpenError::NotFound, "no " + std::string(kind_name(kind)) + " '" + state->name + "' in domain '" +
                                         state->domain->name() + "'"};
      }
    }
    auto created = create_file(*state, file, spec);
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
  // When to look whether the holder still lives (token_alive: a system call).
  // A try looks at once. A blocking call looks after sleeping kLivenessPollNs,
  // and once more before it fails at its deadline: a lock handed to and fro
  // between living processes costs no such call, and a dead holder is still
  // found by every call that would otherwise fail.
  std::int64_t next_liveness_check = blocking ? platform::monotonic_ns() + kLivenessPollNs : 0;
  bool looked_before_failing = false;
  // Every round re-reads the clock: whatever another process writes into the
  // word, a blocking call returns at its deadline and a try gives up after
  // kTryRounds failed compare-and-swaps.
  constexpr int kTryRounds = 64;
  for (int round = 0;; ++round) {
    const std::int64_t now = platform::monotonic_ns();
    const bool past = deadline >= 0 && now >= deadline;
    if (round > 0 && (blocking ? past && looked_before_failing : round >= kTryRounds)) break;
    if (past && !looked_before_failing) {
      looked_before_failing = true;
      next_liveness_check = 0;
    }
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

Result<void, ReleaseError> lock_release(SyncState& state) noexcept {
  if (state.forked()) {
    return {ReleaseError::Forked, "lock '" + state.name + "' was opened by the parent of this forked process"};
  }
  const std::uint32_t me = kLockHeld | (state.domain->token() & kLockTokenMask);
  std::atomic<std::uint32_t>& word = state.word();
  std::uint32_t w = word.load(std::memory_order_relaxed);
  // Bounded: while we hold the lock only kLockWaiters can change under us, so
  // a second failure means a hostile writer; we give up rather than spin.
  for (int attempt = 0; attempt < 64; ++attempt) {
    if ((w & kLockHeld) == 0) return {ReleaseError::NotHeld, "lock '" + state.name + "' is not held"};
    if ((w & ~kLockWaiters) != me) {
      return {ReleaseError::NotOwner, "lock '" + state.name + "' is held by another process"};
    }
    state.header->holder_pid.store(0, std::memory_order_relaxed);
    if (word.compare_exchange_weak(w, 0, std::memory_order_release, std::memory_order_relaxed)) {
      if ((w & kLockWaiters) != 0) platform::futex_wake(&word, 1);
      return {};
    }
  }
  return {ReleaseError::NotOwner, "lock '" + state.name + "' keeps changing under its holder"};
}

/// True when this process holds the lock word of `state`.
bool lock_held_here(const SyncState& state) noexcept {
  const std::uint32_t me = kLockHeld | (state.domain->token() & kLockTokenMask);
  return !state.forked() && (state.word().load(std::memory_order_relaxed) & ~kLockWaiters) == me;
}

// --- the recursive lock -------------------------------------------------------------

/// A number for the calling thread, unique among this process's threads
/// (never 0): cheaper than gettid(), which is a system call.
std::uint32_t thread_number() noexcept {
  static std::atomic<std::uint32_t> next{1};
  thread_local const std::uint32_t mine = [] {
    std::uint32_t n = next.fetch_add(1, std::memory_order_relaxed);
    while (n == 0) n = next.fetch_add(1, std::memory_order_relaxed);  // after 2^32 threads
    return n;
  }();
  return mine;
}

Result<Acquired, AcquireError> rlock_acquire(SyncState& state, std::int64_t deadline, bool blocking) noexcept {
  if (state.forked()) {
    return {AcquireError::Forked,
            "recursive lock '" + state.name + "' was opened by the parent of this forked process"};
  }
  auto& body = state.body<RLockBody>();
  const std::uint32_t thread = thread_number();
  if (lock_held_here(state) && body.owner_thread.load(std::memory_order_relaxed) == thread) {
    const std::uint32_t depth = body.depth.load(std::memory_order_relaxed);
    if (depth == UINT32_MAX) {
      return {AcquireError::TooDeep, "recursive lock '" + state.name + "' is acquired 2^32 - 1 times already"};
    }
    body.depth.store(depth + 1, std::memory_order_relaxed);
    return Acquired::Clean;
  }
  auto got = lock_acquire(state, deadline, blocking);
  if (got) {
    body.owner_thread.store(thread, std::memory_order_relaxed);
    body.depth.store(1, std::memory_order_relaxed);
  }
  return got;
}

Result<void, ReleaseError> rlock_release(SyncState& state) noexcept {
  if (state.forked()) {
    return {ReleaseError::Forked,
            "recursive lock '" + state.name + "' was opened by the parent of this forked process"};
  }
  const std::uint32_t w = state.word().load(std::memory_order_relaxed);
  if ((w & kLockHeld) == 0) return {ReleaseError::NotHeld, "recursive lock '" + state.name + "' is not held"};
  if (!lock_held_here(state)) {
    return {ReleaseError::NotOwner, "recursive lock '" + state.name + "' is held by another process"};
  }
  auto& body = state.body<RLockBody>();
  if (body.owner_thread.load(std::memory_order_relaxed) != thread_number()) {
    return {ReleaseError::NotOwnerThread, "recursive lock '" + state.name + "' is owned by another thread"};
  }
  const std::uint32_t depth = body.depth.load(std::memory_order_relaxed);
  if (depth > 1) {
    body.depth.store(depth - 1, std::memory_order_relaxed);
    return {};
  }
  // Cleared before the word: the next owner's thread number is written after
  // its acquire, and no one reads ours once the word is free.
  body.owner_thread.store(0, std::memory_order_relaxed);
  body.depth.store(0, std::memory_order_relaxed);
  return lock_release(state);
}

// --- semaphores -------------------------------------------------------------------

constexpr std::uint32_t held_of(std::uint64_t entry) noexcept {
  return static_cast<std::uint32_t>(entry);
}
constexpr std::uint32_t generation_of(std::uint64_t entry) noexcept {
  return static_cast<std::uint32_t>(entry >> 32U) & kTokenGenerationMask;
}
constexpr std::uint64_t held_entry(std::uint32_t generation, std::uint32_t held) noexcept {
  return (std::uint64_t{generation & kTokenGenerationMask} << 32U) | held;
}

std::uint32_t my_slot(const SyncState& state) noexcept {
  return state.domain->token() & ((1U << kTokenSlotBits) - 1);
}
std::uint32_t my_generation(const SyncState& state) noexcept {
  return (state.domain->token() >> kTokenSlotBits) & kTokenGenerationMask;
}

/// Adds `n` counts to the word (capped at the bound or 2^31 - 1) and wakes
/// sleepers if there are any.
void sem_give(SyncState& state, std::uint32_t n) noexcept {
  std::atomic<std::uint32_t>& word = state.word();
  const std::uint32_t cap = state.kind == SyncKind::BoundedSemaphore ? state.bound : kSemCountMask;
  std::uint32_t w = word.load(std::memory_order_relaxed);
  for (int attempt = 0; attempt < 1000; ++attempt) {
    const std::uint32_t count = w & kSemCountMask;
    const std::uint32_t now = count >= cap ? count : count + std::min(n, cap - count);
    // Waiters are all woken and the bit cleared: those who find no count set it again.
    if (word.compare_exchange_weak(w, now, std::memory_order_release, std::memory_order_relaxed)) {
      if ((w & kSemWaiters) != 0) platform::futex_wake(&word, INT_MAX);
      return;
    }
  }
}

/// Returns the counts of dead holders (each entry by one compare-and-swap, so
/// exactly once); true if any came back.
bool sem_return_dead(SyncState& state) noexcept {
  auto& body = state.body<SemaphoreBody>();
  std::atomic<std::uint64_t>* table = state.table();
  bool any = false;
  for (std::uint32_t slot = 0; slot < kMaxProcesses; ++slot) {
    std::uint64_t e =
        table[slot].load(std::memory_order_acquire);  // NOLINT(cppcoreguidelines-pro-bounds-pointer-arithmetic)
    if (e == 0) continue;
    if (state.domain->token_alive(make_token(slot, generation_of(e)))) continue;
    if (!table[slot].compare_exchange_strong(e, 0, std::memory_order_acq_rel))
      continue;  // NOLINT(cppcoreguidelines-pro-bounds-pointer-arithmetic)
    if ((e & kHeldBusy) != 0) body.maybe_leaked.fetch_add(1, std::memory_order_relaxed);
    if (held_of(e) != 0) {
      body.returned.fetch_add(held_of(e), std::memory_order_relaxed);
      sem_give(state, held_of(e));
      any = true;
    }
  }
  return any;
}

/// Changes this process's entry: held + `delta` (floored at 0), kHeldBusy as
/// `busy`. An older generation's counts found there (a dead process that had
/// this slot) are returned first. Bounded: gives up against a hostile writer.
void sem_record(SyncState& state, std::int64_t delta, bool busy) noexcept {
  std::atomic<std::uint64_t>& entry =
      state.table()[my_slot(state)];  // NOLINT(cppcoreguidelines-pro-bounds-pointer-arithmetic)
  const std::uint32_t generation = my_generation(state);
  std::uint64_t e = entry.load(std::memory_order_acquire);
  for (int attempt = 0; attempt < 64; ++attempt) {
    if (e != 0 && generation_of(e) != generation) {
      if (entry.compare_exchange_weak(e, 0, std::memory_order_acq_rel)) {
        auto& body = state.body<SemaphoreBody>();
        if ((e & kHeldBusy) != 0) body.maybe_leaked.fetch_add(1, std::memory_order_relaxed);
        if (held_of(e) != 0) {
          body.returned.fetch_add(held_of(e), std::memory_order_relaxed);
          sem_give(state, held_of(e));
        }
        e = 0;
      }
      continue;
    }
    const std::int64_t held = std::clamp<std::int64_t>(std::int64_t{held_of(e)} + delta, 0, UINT32_MAX);
    std::uint64_t desired = held_entry(generation, static_cast<std::uint32_t>(held)) | (busy ? kHeldBusy : 0);
    if (desired == held_entry(generation, 0)) desired = 0;  // nothing held: an empty entry
    if (entry.compare_exchange_weak(e, desired, std::memory_order_acq_rel, std::memory_order_acquire)) return;
  }
}

std::uint32_t sem_held_here(const SyncState& state) noexcept {
  const std::uint64_t e = state.table()[my_slot(state)].load(std::memory_order_relaxed);  // NOLINT
  return generation_of(e) == my_generation(state) ? held_of(e) : 0;
}

Result<void, AcquireError> sem_acquire(SyncState& state, std::int64_t deadline, bool blocking) noexcept {
  const char* what = kind_name(state.kind);
  if (state.forked()) {
    return {AcquireError::Forked,
            std::string(what) + " '" + state.name + "' was opened by the parent of this forked process"};
  }
  std::atomic<std::uint32_t>& word = state.word();
  // Marked busy before the count is taken, recorded after (sync_layout.hpp:
  // a kill between the two loses one count and never makes one).
  sem_record(state, 0, true);
  std::int64_t next_scan = 0;  // at once, when no count is found
  constexpr int kTryRounds = 64;
  for (int round = 0;; ++round) {
    const std::int64_t now = platform::monotonic_ns();
    const bool past = deadline >= 0 && now >= deadline;
    if (round > 0 && (blocking ? past : round >= kTryRounds)) break;
    std::uint32_t w = word.load(std::memory_order_relaxed);
    if ((w & kSemCountMask) != 0) {
      if (word.compare_exchange_weak(w, w - 1, std::memory_order_acquire, std::memory_order_relaxed)) {
        sem_record(state, 1, false);
        return {};
      }
      continue;
    }
    if (now >= next_scan) {
      next_scan = now + kLivenessPollNs;
      if (sem_return_dead(state)) continue;
    }
    if (!blocking || past) break;
    if ((w & kSemWaiters) == 0 &&
        !word.compare_exchange_weak(w, w | kSemWaiters, std::memory_order_relaxed, std::memory_order_relaxed)) {
      continue;
    }
    const std::int64_t wake_at = deadline >= 0 ? std::min(deadline, next_scan) : next_scan;
    (void)platform::futex_wait(&word, w | kSemWaiters, wake_at);
  }
  sem_record(state, 0, false);
  if (!blocking) return {AcquireError::WouldBlock, std::string(what) + " '" + state.name + "' has no count free"};
  return {AcquireError::Timeout, std::string(what) + " '" + state.name + "' had no count free for the whole timeout"};
}

Result<void, SemaphoreReleaseError> sem_release(SyncState& state, std::uint32_t n) noexcept {
  // Built only on an error path: a string per call would cost more than the operation.
  const auto what = [&state] { return std::string(kind_name(state.kind)) + " '" + state.name + "'"; };
  if (state.forked()) {
    return {SemaphoreReleaseError::Forked, what() + " was opened by the parent of this forked process"};
  }
  if (n == 0 || n > kSemCountMask) return {SemaphoreReleaseError::InvalidArgument, "release needs 1 <= n < 2^31"};
  const bool bounded = state.kind == SyncKind::BoundedSemaphore;
  const std::uint32_t cap = bounded ? state.bound : kSemCountMask;
  std::atomic<std::uint32_t>& word = state.word();
  auto refused = [&](std::uint32_t count) -> Error<SemaphoreReleaseError> {
    if (bounded) {
      return {SemaphoreReleaseError::TooMany, what() + " would hold " + std::to_string(std::uint64_t{count} + n) +
                                                  ", past its initial value " + std::to_string(cap)};
    }
    return {SemaphoreReleaseError::InvalidArgument, what() + " would pass 2^31 - 1 counts"};
  };
  std::uint32_t w = word.load(std::memory_order_relaxed);
  if (n > cap - std::min(cap, w & kSemCountMask)) return refused(w & kSemCountMask);
  // The record is dropped before the count is given (a kill between loses a count, never makes one).
  const std::uint32_t recorded = std::min(n, sem_held_here(state));
  sem_record(state, -std::int64_t{recorded}, true);
  for (int attempt = 0; attempt < 1000; ++attempt) {
    const std::uint32_t count = w & kSemCountMask;
    if (n > cap - std::min(cap, count)) {
      sem_record(state, recorded, false);  // not released: still ours
      return refused(count);
    }
    if (word.compare_exchange_weak(w, count + n, std::memory_order_release, std::memory_order_relaxed)) {
      if ((w & kSemWaiters) != 0) platform::futex_wake(&word, INT_MAX);
      sem_record(state, 0, false);
      return {};
    }
  }
  sem_record(state, recorded, false);
  return {SemaphoreReleaseError::InvalidArgument, what() + " keeps changing under the release"};
}

// --- the barrier ------------------------------------------------------------------

constexpr std::uint32_t barrier_gen(std::uint32_t w) noexcept {
  return (w >> kBarrierGenShift) & kBarrierGenMask;
}
constexpr std::uint64_t arrival_entry(std::uint32_t barrier_generation, std::uint32_t slot_generation,
                                      std::uint32_t count) noexcept {
  return kArrivalValid | (std::uint64_t{barrier_generation & kBarrierGenMask} << 36U) |
         (std::uint64_t{slot_generation & kTokenGenerationMask} << 16U) | (count & kBarrierCountMask);
}
constexpr std::uint32_t arrival_barrier_gen(std::uint64_t e) noexcept {
  return static_cast<std::uint32_t>(e >> 36U) & kBarrierGenMask;
}
constexpr std::uint32_t arrival_slot_gen(std::uint64_t e) noexcept {
  return static_cast<std::uint32_t>(e >> 16U) & kTokenGenerationMask;
}

void barrier_break(SyncState& state) noexcept {
  std::atomic<std::uint32_t>& word = state.word();
  word.fetch_or(kBarrierBroken, std::memory_order_acq_rel);
  platform::futex_wake(&word, INT_MAX);
}

/// Records one more arrival of this process in generation `g`.
void barrier_record(SyncState& state, std::uint32_t g) noexcept {
  std::atomic<std::uint64_t>& entry =
      state.table()[my_slot(state)];  // NOLINT(cppcoreguidelines-pro-bounds-pointer-arithmetic)
  const std::uint32_t generation = my_generation(state);
  std::uint64_t e = entry.load(std::memory_order_relaxed);
  for (int attempt = 0; attempt < 64; ++attempt) {
    const bool same = (e & kArrivalValid) != 0 && arrival_barrier_gen(e) == g && arrival_slot_gen(e) == generation;
    const std::uint32_t count =
        same ? std::min<std::uint32_t>((static_cast<std::uint32_t>(e) & kBarrierCountMask) + 1, kBarrierCountMask) : 1;
    if (entry.compare_exchange_weak(e, arrival_entry(g, generation, count), std::memory_order_release,
                                    std::memory_order_relaxed)) {
      return;
    }
  }
}

/// True if a party recorded as arrived in generation `g` is dead. Clears dead
/// entries of other generations on the way (so they cannot match a later one).
bool barrier_dead_party(SyncState& state, std::uint32_t g) noexcept {
  std::atomic<std::uint64_t>* table = state.table();
  for (std::uint32_t slot = 0; slot < kMaxProcesses; ++slot) {
    std::uint64_t e =
        table[slot].load(std::memory_order_acquire);  // NOLINT(cppcoreguidelines-pro-bounds-pointer-arithmetic)
    if (e == 0) continue;
    if (state.domain->token_alive(make_token(slot, arrival_slot_gen(e)))) continue;
    if ((e & kArrivalValid) != 0 && arrival_barrier_gen(e) == g && (e & kBarrierCountMask) != 0) return true;
    (void)table[slot].compare_exchange_strong(e, 0, std::memory_order_relaxed);  // NOLINT
  }
  return false;
}

Result<std::uint32_t, BarrierError> barrier_wait(SyncState& state, std::int64_t deadline) noexcept {
  const auto what = [&state] { return "barrier '" + state.name + "'"; };  // built on error paths only
  if (state.forked()) return {BarrierError::Forked, what() + " was opened by the parent of this forked process"};
  std::atomic<std::uint32_t>& word = state.word();
  const std::uint32_t parties = state.parties;
  std::uint32_t w = word.load(std::memory_order_acquire);
  std::uint32_t g = 0;
  std::uint32_t index = 0;
  // Arrive: recorded first, then counted (a party killed between the two is
  // seen as arrived and dead, and breaks the barrier).
  for (bool arrived = false, first = true; !arrived; first = false) {
    if ((w & kBarrierBroken) != 0) return {BarrierError::Broken, what() + " is broken"};
    if (!first && deadline >= 0 && platform::monotonic_ns() >= deadline) {
      barrier_break(state);
      return {BarrierError::Timeout, what() + " kept changing until the deadline (now broken)"};
    }
    g = barrier_gen(w);
    barrier_record(state, g);
    for (int attempt = 0; attempt < 64; ++attempt) {
      if ((w & kBarrierBroken) != 0 || barrier_gen(w) != g) break;
      const std::uint32_t count = w & kBarrierCountMask;
      if (count + 1 >= parties) {
        // The last party: a new generation, and everyone wakes.
        const std::uint32_t next = ((g + 1) & kBarrierGenMask) << kBarrierGenShift;
        if (word.compare_exchange_weak(w, next, std::memory_order_acq_rel, std::memory_order_acquire)) {
          // Nobody else arrived (one party): nobody can sleep on this generation.
          if (count != 0) platform::futex_wake(&word, INT_MAX);
          return std::min(count, parties - 1);
        }
      } else if (word.compare_exchange_weak(w, w + 1, std::memory_order_acq_rel, std::memory_order_acquire)) {
        index = count;
        arrived = true;
        break;
      }
    }
    if (!arrived) w = word.load(std::memory_order_acquire);
  }
  std::int64_t next_check = platform::monotonic_ns() + kLivenessPollNs;
  for (;;) {
    w = word.load(std::memory_order_acquire);
    if (barrier_gen(w) != g) {
      if ((w & kBarrierWasReset) != 0) return {BarrierError::Broken, what() + " was reset while waiting"};
      return index;
    }
    if ((w & kBarrierBroken) != 0) return {BarrierError::Broken, what() + " is broken"};
    // The parties' lives are looked at before the deadline: a dead party
    // reports Broken even to a waiter whose timeout has passed meanwhile.
    const std::int64_t now = platform::monotonic_ns();
    if (now >= next_check) {
      next_check = now + kLivenessPollNs;
      if (barrier_dead_party(state, g)) {
        barrier_break(state);
        return {BarrierError::Broken, what() + ": a party that arrived has died (now broken)"};
      }
    }
    if (deadline >= 0 && now >= deadline) {
      barrier_break(state);
      return {BarrierError::Timeout, what() + ": not every party arrived before the timeout (now broken)"};
    }
    const std::int64_t wake_at = deadline >= 0 ? std::min(deadline, next_check) : next_check;
    (void)platform::futex_wait(&word, w, wake_at);
  }
}

// --- the condition ----------------------------------------------------------------

Result<Wakeup, ConditionError> condition_wait(SyncState& cond, SyncState& lock, std::int64_t deadline) noexcept {
  const auto what = [&cond] { return "condition '" + cond.name + "'"; };  // built on error paths only
  if (cond.forked()) return {ConditionError::Forked, what() + " was opened by the parent of this forked process"};
  if (!lock_held_here(lock)) return {ConditionError::NotHeld, what() + ": wait needs its lock held"};
  std::atomic<std::uint32_t>& seq = cond.body<ConditionBody>().seq;
  const std::uint32_t before = seq.fetch_or(kCondWaiters, std::memory_order_acq_rel) | kCondWaiters;
  if (!lock_release(lock)) return {ConditionError::NotHeld, what() + ": wait needs its lock held"};
  Wakeup out;
  for (;;) {
    if (seq.load(std::memory_order_acquire) != before) {
      out.notified = true;
      break;
    }
    if (deadline >= 0 && platform::monotonic_ns() >= deadline) break;
    (void)platform::futex_wait(&seq, before, deadline);
  }
  auto got = lock_acquire(lock, deadline, true);
  if (!got) {
    if (got.error().code == AcquireError::Forked) return {ConditionError::Forked, got.error().message};
    return {ConditionError::LockTimeout,
            what() + ": its lock stayed held by another until the deadline (not held now)"};
  }
  out.lock = *got;
  return out;
}

Result<void, ConditionError> condition_notify(SyncState& cond, const SyncState& lock, std::uint32_t n,
                                              bool all) noexcept {
  const auto what = [&cond] { return "condition '" + cond.name + "'"; };  // built on error paths only
  if (cond.forked()) return {ConditionError::Forked, what() + " was opened by the parent of this forked process"};
  if (!lock_held_here(lock)) return {ConditionError::NotHeld, what() + ": notify needs its lock held"};
  if (n == 0) return {};
  std::atomic<std::uint32_t>& seq = cond.body<ConditionBody>().seq;
  if (!all) {
    const std::uint32_t old = seq.fetch_add(2, std::memory_order_acq_rel);
    if ((old & kCondWaiters) != 0) platform::futex_wake(&seq, static_cast<int>(std::min<std::uint32_t>(n, INT_MAX)));
    return {};
  }
  // All: clears kCondWaiters, as nobody is left asleep (bounded against a hostile writer).
  std::uint32_t old = seq.load(std::memory_order_relaxed);
  for (int attempt = 0; attempt < 64; ++attempt) {
    if (seq.compare_exchange_weak(old, (old + 2) & ~kCondWaiters, std::memory_order_acq_rel,
                                  std::memory_order_relaxed)) {
      break;
    }
  }
  platform::futex_wake(&seq, INT_MAX);
  return {};
}

LockInfo lock_info(const SyncState& state) noexcept {
  const std::uint32_t w = state.word().load(std::memory_order_relaxed);
  LockInfo out;
  out.held = (w & kLockHeld) != 0;
  out.waiters = (w & kLockWaiters) != 0;
  if (out.held) {
    out.holder_slot = w & ((1U << kTokenSlotBits) - 1);
    out.holder_pid = state.header->holder_pid.load(std::memory_order_relaxed);
    out.held_by_this_process = !state.forked() && (w & kLockTokenMask) == (state.domain->token() & kLockTokenMask);
  }
  out.owner_deaths = state.header->owner_deaths.load(std::memory_order_relaxed);
  return out;
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
    case AcquireError::TooDeep: return "TooDeep";
  }
  return "?";
}

std::string_view to_string(ReleaseError code) noexcept {
  switch (code) {
    case ReleaseError::NotHeld: return "NotHeld";
    case ReleaseError::NotOwner: return "NotOwner";
    case ReleaseError::Forked: return "Forked";
    case ReleaseError::NotOwnerThread: return "NotOwnerThread";
  }
  return "?";
}

// --- Lock -------------------------------------------------------------------------

Result<Lock, OpenError> Lock::open(std::string_view name, OpenMode mode, const SyncOptions& options) {
  auto state =
      detail::open_sync(name, mode, options, detail::SyncSpec{detail::SyncKind::Lock, detail::kSyncFileBytes, {}, {}});
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
  return detail::lock_release(*state_);
}

LockInfo Lock::info() const noexcept {
  return detail::lock_info(*state_);
}

const std::string& Lock::name() const noexcept {
  return state_->name;
}

// --- Event ------------------------------------------------------------------------

Result<Event, OpenError> Event::open(std::string_view name, OpenMode mode, const SyncOptions& options) {
  auto state =
      detail::open_sync(name, mode, options, detail::SyncSpec{detail::SyncKind::Event, detail::kSyncFileBytes, {}, {}});
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

// --- RLock ------------------------------------------------------------------------

Result<RLock, OpenError> RLock::open(std::string_view name, OpenMode mode, const SyncOptions& options) {
  auto state =
      detail::open_sync(name, mode, options, detail::SyncSpec{detail::SyncKind::RLock, detail::kSyncFileBytes, {}, {}});
  if (!state) return std::move(state).error();
  RLock lock;
  lock.state_ = std::move(*state);
  return lock;
}

Result<void, UnlinkError> RLock::remove(std::string_view name, std::string_view domain) {
  return detail::remove_sync(name, domain);
}

RLock::RLock(RLock&&) noexcept = default;
RLock& RLock::operator=(RLock&&) noexcept = default;
RLock::~RLock() = default;

Result<Acquired, AcquireError> RLock::try_acquire() noexcept {
  return detail::rlock_acquire(*state_, platform::monotonic_ns(), false);
}

Result<Acquired, AcquireError> RLock::acquire() noexcept {
  return detail::rlock_acquire(*state_, -1, true);
}

Result<Acquired, AcquireError> RLock::acquire_for(std::chrono::nanoseconds timeout) noexcept {
  return detail::rlock_acquire(*state_, detail::deadline_after(timeout), true);
}

Result<void, ReleaseError> RLock::release() noexcept {
  return detail::rlock_release(*state_);
}

std::uint32_t RLock::depth() const noexcept {
  const auto& body = state_->body<detail::RLockBody>();
  if (!detail::lock_held_here(*state_) ||
      body.owner_thread.load(std::memory_order_relaxed) != detail::thread_number()) {
    return 0;
  }
  return body.depth.load(std::memory_order_relaxed);
}

LockInfo RLock::info() const noexcept {
  return detail::lock_info(*state_);
}

const std::string& RLock::name() const noexcept {
  return state_->name;
}

// --- Semaphore, BoundedSemaphore --------------------------------------------------

namespace {

Result<std::shared_ptr<detail::SyncState>, OpenError> open_semaphore(std::string_view name, std::uint32_t value,
                                                                     OpenMode mode, const SyncOptions& options,
                                                                     bool bounded) {
  if (value > detail::kSemCountMask) {
    return {OpenError::InvalidArgument, "a semaphore's value is at most 2^31 - 1, not " + std::to_string(value)};
  }
  detail::SyncSpec spec;
  spec.kind = bounded ? detail::SyncKind::BoundedSemaphore : detail::SyncKind::Semaphore;
  spec.file_bytes = detail::kSyncTableOffset + detail::kSyncTableBytes;
  spec.init = [value](std::byte* base) {
    auto* header = reinterpret_cast<detail::SyncHeader*>(base);  // NOLINT
    header->word.store(value, std::memory_order_relaxed);
    reinterpret_cast<detail::SemaphoreBody*>(base + detail::kSyncBodyOffset)->bound = value;  // NOLINT
  };
  if (bounded) {
    spec.matches = [value](const detail::SyncState& state) -> Result<void, OpenError> {
      if (state.bound == value) return {};
      return {OpenError::Incompatible, "bounded semaphore '" + state.name + "' has the initial value " +
                                           std::to_string(state.bound) + ", not " + std::to_string(value)};
    };
  }
  return detail::open_sync(name, mode, options, spec);
}

}  // namespace

Result<Semaphore, OpenError> Semaphore::open(std::string_view name, std::uint32_t value, OpenMode mode,
                                             const SyncOptions& options) {
  auto state = open_semaphore(name, value, mode, options, false);
  if (!state) return std::move(state).error();
  Semaphore semaphore;
  semaphore.state_ = std::move(*state);
  return semaphore;
}

Result<BoundedSemaphore, OpenError> BoundedSemaphore::open(std::string_view name, std::uint32_t value, OpenMode mode,
                                                           const SyncOptions& options) {
  auto state = open_semaphore(name, value, mode, options, true);
  if (!state) return std::move(state).error();
  BoundedSemaphore semaphore;
  semaphore.state_ = std::move(*state);
  return semaphore;
}

Result<void, UnlinkError> Semaphore::remove(std::string_view name, std::string_view domain) {
  return detail::remove_sync(name, domain);
}

Semaphore::Semaphore(Semaphore&&) noexcept = default;
Semaphore& Semaphore::operator=(Semaphore&&) noexcept = default;
Semaphore::~Semaphore() = default;

Result<void, AcquireError> Semaphore::try_acquire() noexcept {
  return detail::sem_acquire(*state_, platform::monotonic_ns(), false);
}

Result<void, AcquireError> Semaphore::acquire() noexcept {
  return detail::sem_acquire(*state_, -1, true);
}

Result<void, AcquireError> Semaphore::acquire_for(std::chrono::nanoseconds timeout) noexcept {
  return detail::sem_acquire(*state_, detail::deadline_after(timeout), true);
}

Result<void, SemaphoreReleaseError> Semaphore::release(std::uint32_t n) noexcept {
  return detail::sem_release(*state_, n);
}

SemaphoreInfo Semaphore::info() const noexcept {
  const detail::SyncState& state = *state_;
  const std::uint32_t w = state.word().load(std::memory_order_relaxed);
  SemaphoreInfo out;
  out.value = w & detail::kSemCountMask;
  out.waiters = (w & detail::kSemWaiters) != 0;
  out.bound = state.bound;
  out.held_by_this_process = state.forked() ? 0 : detail::sem_held_here(state);
  for (std::uint32_t slot = 0; slot < detail::kMaxProcesses; ++slot) {
    out.holders += static_cast<std::uint32_t>(detail::held_of(state.table()[slot].load(std::memory_order_relaxed)) !=
                                              0);  // NOLINT
  }
  const auto& body = state.body<detail::SemaphoreBody>();
  out.returned = body.returned.load(std::memory_order_relaxed);
  out.maybe_leaked = body.maybe_leaked.load(std::memory_order_relaxed);
  return out;
}

const std::string& Semaphore::name() const noexcept {
  return state_->name;
}

std::string_view to_string(SemaphoreReleaseError code) noexcept {
  switch (code) {
    case SemaphoreReleaseError::InvalidArgument: return "InvalidArgument";
    case SemaphoreReleaseError::TooMany: return "TooMany";
    case SemaphoreReleaseError::Forked: return "Forked";
  }
  return "?";
}

// --- Barrier ----------------------------------------------------------------------

Result<Barrier, OpenError> Barrier::open(std::string_view name, std::uint32_t parties, OpenMode mode,
                                         const SyncOptions& options) {
  if (parties == 0 || parties > detail::kMaxBarrierParties) {
    return {OpenError::InvalidArgument, "a barrier has 1 to 65535 parties, not " + std::to_string(parties)};
  }
  detail::SyncSpec spec;
  spec.kind = detail::SyncKind::Barrier;
  spec.file_bytes = detail::kSyncTableOffset + detail::kSyncTableBytes;
  spec.init = [parties](std::byte* base) {
    reinterpret_cast<detail::BarrierBody*>(base + detail::kSyncBodyOffset)->parties = parties;  // NOLINT
  };
  spec.matches = [parties](const detail::SyncState& state) -> Result<void, OpenError> {
    if (state.parties == parties) return {};
    return {OpenError::Incompatible, "barrier '" + state.name + "' has " + std::to_string(state.parties) +
                                         " parties, not " + std::to_string(parties)};
  };
  auto state = detail::open_sync(name, mode, options, spec);
  if (!state) return std::move(state).error();
  Barrier barrier;
  barrier.state_ = std::move(*state);
  return barrier;
}

Result<void, UnlinkError> Barrier::remove(std::string_view name, std::string_view domain) {
  return detail::remove_sync(name, domain);
}

Barrier::Barrier(Barrier&&) noexcept = default;
Barrier& Barrier::operator=(Barrier&&) noexcept = default;
Barrier::~Barrier() = default;

Result<std::uint32_t, BarrierError> Barrier::wait() noexcept {
  return detail::barrier_wait(*state_, -1);
}

Result<std::uint32_t, BarrierError> Barrier::wait_for(std::chrono::nanoseconds timeout) noexcept {
  return detail::barrier_wait(*state_, detail::deadline_after(timeout));
}

void Barrier::abort() noexcept {
  detail::barrier_break(*state_);
}

void Barrier::reset() noexcept {
  std::atomic<std::uint32_t>& word = state_->word();
  std::uint32_t w = word.load(std::memory_order_relaxed);
  for (int attempt = 0; attempt < 64; ++attempt) {
    const std::uint32_t next = (((detail::barrier_gen(w) + 1) & detail::kBarrierGenMask) << detail::kBarrierGenShift) |
                               detail::kBarrierWasReset;
    if (word.compare_exchange_weak(w, next, std::memory_order_acq_rel, std::memory_order_relaxed)) break;
  }
  platform::futex_wake(&word, INT_MAX);
}

bool Barrier::broken() const noexcept {
  return (state_->word().load(std::memory_order_acquire) & detail::kBarrierBroken) != 0;
}

std::uint32_t Barrier::parties() const noexcept {
  return state_->parties;
}

std::uint32_t Barrier::n_waiting() const noexcept {
  return std::min(state_->word().load(std::memory_order_relaxed) & detail::kBarrierCountMask, state_->parties);
}

const std::string& Barrier::name() const noexcept {
  return state_->name;
}

std::string_view to_string(BarrierError code) noexcept {
  switch (code) {
    case BarrierError::Broken: return "Broken";
    case BarrierError::Timeout: return "Timeout";
    case BarrierError::Forked: return "Forked";
  }
  return "?";
}

// --- Condition --------------------------------------------------------------------

namespace {

Result<std::shared_ptr<detail::SyncState>, OpenError> open_condition(std::string_view name,
                                                                     const std::string& lock_name, OpenMode mode,
                                                                     const SyncOptions& options) {
  detail::SyncSpec spec;
  spec.kind = detail::SyncKind::Condition;
  spec.init = [lock_name](std::byte* base) {
    auto* body = reinterpret_cast<detail::ConditionBody*>(base + detail::kSyncBodyOffset);  // NOLINT
    body->lock_name_bytes = static_cast<std::uint32_t>(lock_name.size());
    std::memcpy(static_cast<char*>(body->lock_name), lock_name.data(), lock_name.size());
  };
  spec.matches = [lock_name](const detail::SyncState& state) -> Result<void, OpenError> {
    if (state.lock_name == lock_name) return {};
    auto says = [](const std::string& n) { return n.empty() ? std::string("its own lock") : "lock '" + n + "'"; };
    return {OpenError::Incompatible,
            "condition '" + state.name + "' is bound to " + says(state.lock_name) + ", not " + says(lock_name)};
  };
  return detail::open_sync(name, mode, options, spec);
}

}  // namespace

Result<Condition, OpenError> Condition::open(std::string_view name, OpenMode mode, const SyncOptions& options) {
  auto state = open_condition(name, {}, mode, options);
  if (!state) return std::move(state).error();
  Condition condition;
  condition.state_ = std::move(*state);
  condition.lock_ = condition.state_;
  return condition;
}

Result<Condition, OpenError> Condition::open(std::string_view name, const Lock& lock, OpenMode mode,
                                             const SyncOptions& options) {
  if (!lock.state_) return {OpenError::InvalidArgument, "the lock handle was moved from"};
  auto state = open_condition(name, lock.state_->name, mode, options);
  if (!state) return std::move(state).error();
  if ((*state)->domain->name() != lock.state_->domain->name()) {
    return {OpenError::InvalidArgument,
            "condition '" + std::string(name) + "' and lock '" + lock.state_->name + "' are in different domains"};
  }
  Condition condition;
  condition.state_ = std::move(*state);
  condition.lock_ = lock.state_;
  return condition;
}

Result<void, UnlinkError> Condition::remove(std::string_view name, std::string_view domain) {
  return detail::remove_sync(name, domain);
}

Condition::Condition(Condition&&) noexcept = default;
Condition& Condition::operator=(Condition&&) noexcept = default;
Condition::~Condition() = default;

Result<Acquired, AcquireError> Condition::acquire() noexcept {
  return detail::lock_acquire(*lock_, -1, true);
}

Result<Acquired, AcquireError> Condition::acquire_for(std::chrono::nanoseconds timeout) noexcept {
  return detail::lock_acquire(*lock_, detail::deadline_after(timeout), true);
}

Result<void, ReleaseError> Condition::release() noexcept {
  return detail::lock_release(*lock_);
}

Result<Wakeup, ConditionError> Condition::wait() noexcept {
  return detail::condition_wait(*state_, *lock_, -1);
}

Result<Wakeup, ConditionError> Condition::wait_for(std::chrono::nanoseconds timeout) noexcept {
  return detail::condition_wait(*state_, *lock_, detail::deadline_after(timeout));
}

Result<void, ConditionError> Condition::notify(std::uint32_t n) noexcept {
  return detail::condition_notify(*state_, *lock_, n, false);
}

Result<void, ConditionError> Condition::notify_all() noexcept {
  return detail::condition_notify(*state_, *lock_, 1, true);
}

const std::string& Condition::name() const noexcept {
  return state_->name;
}

std::string_view to_string(ConditionError code) noexcept {
  switch (code) {
    case ConditionError::NotHeld: return "NotHeld";
    case ConditionError::LockTimeout: return "LockTimeout";
    case ConditionError::Forked: return "Forked";
  }
  return "?";
}

// --- SharedArray ------------------------------------------------------------------

namespace {

Result<std::shared_ptr<detail::SyncState>, OpenError> open_array(std::string_view name, DType dtype,
                                                                 std::span<const std::int64_t> shape,
                                                                 std::span<const std::byte> initial, OpenMode mode,
                                                                 const SyncOptions& options) {
  std::uint64_t elements = 0;
  std::uint64_t bytes = 0;
  if (auto why = detail::array_extent(dtype, shape, elements, bytes); !why.empty()) {
    return {OpenError::InvalidArgument, "shared array '" + std::string(name) + "' needs " + why};
  }
  if (!initial.empty() && initial.size() != bytes) {
    return {OpenError::InvalidArgument, "the initial value of '" + std::string(name) + "' has " +
                                            std::to_string(initial.size()) + " bytes, its dtype " +
                                            std::to_string(bytes)};
  }
  detail::SyncSpec spec;
  spec.kind = detail::SyncKind::SharedArray;
  spec.file_bytes = detail::kSyncTableOffset + bytes;
  std::vector<std::int64_t> wanted(shape.begin(), shape.end());
  spec.init = [dtype, wanted, bytes, initial](std::byte* base) {
    auto* body = reinterpret_cast<detail::ArrayBody*>(base + detail::kSyncBodyOffset);  // NOLINT
    body->code = static_cast<std::uint8_t>(dtype.code);
    body->bits = dtype.bits;
    body->lanes = dtype.lanes;
    body->ndim = static_cast<std::uint32_t>(wanted.size());
    body->data_bytes = bytes;
    std::copy(wanted.begin(), wanted.end(), static_cast<std::int64_t*>(body->shape));
    if (!initial.empty()) std::memcpy(base + detail::kSyncTableOffset, initial.data(), initial.size());  // NOLINT
  };
  spec.matches = [dtype, wanted](const detail::SyncState& state) -> Result<void, OpenError> {
    if (state.dtype == dtype && state.shape == wanted) return {};
    auto says = [](DType d, const std::vector<std::int64_t>& s) {
      std::string out = "dtype (code " + std::to_string(static_cast<int>(d.code)) + ", " + std::to_string(d.bits) +
                        " bits, " + std::to_string(d.lanes) + " lanes) and shape (";
      for (std::size_t i = 0; i < s.size(); ++i) out += (i > 0 ? ", " : "") + std::to_string(s[i]);
      return out + ")";
    };
    return {OpenError::Incompatible,
            "shared array '" + state.name + "' has " + says(state.dtype, state.shape) + ", not " + says(dtype, wanted)};
  };
  return detail::open_sync(name, mode, options, spec);
}

}  // namespace

Result<SharedArray, OpenError> SharedArray::open(std::string_view name, DType dtype,
                                                 std::span<const std::int64_t> shape, OpenMode mode,
                                                 const SyncOptions& options) {
  auto state = open_array(name, dtype, shape, {}, mode, options);
  if (!state) return std::move(state).error();
  SharedArray array;
  array.state_ = std::move(*state);
  return array;
}

Result<SharedArray, OpenError> SharedArray::open_value(std::string_view name, DType dtype,
                                                       std::span<const std::byte> initial, OpenMode mode,
                                                       const SyncOptions& options) {
  auto state = open_array(name, dtype, {}, initial, mode, options);
  if (!state) return std::move(state).error();
  SharedArray array;
  array.state_ = std::move(*state);
  return array;
}

Result<void, UnlinkError> SharedArray::remove(std::string_view name, std::string_view domain) {
  return detail::remove_sync(name, domain);
}

SharedArray::SharedArray(SharedArray&&) noexcept = default;
SharedArray& SharedArray::operator=(SharedArray&&) noexcept = default;
SharedArray::~SharedArray() = default;

Result<Acquired, AcquireError> SharedArray::acquire() noexcept {
  return detail::lock_acquire(*state_, -1, true);
}

Result<Acquired, AcquireError> SharedArray::acquire_for(std::chrono::nanoseconds timeout) noexcept {
  return detail::lock_acquire(*state_, detail::deadline_after(timeout), true);
}

Result<void, ReleaseError> SharedArray::release() noexcept {
  return detail::lock_release(*state_);
}

DType SharedArray::dtype() const noexcept {
  return state_->dtype;
}

std::span<const std::int64_t> SharedArray::shape() const noexcept {
  return state_->shape;
}

std::size_t SharedArray::size() const noexcept {
  return state_->elements;
}

std::span<std::byte> SharedArray::bytes() const noexcept {
  return {state_->data(), state_->data_bytes};
}

Result<void*, ValueError> SharedArray::element(std::size_t index, std::size_t bytes, bool is_signed) const noexcept {
  const detail::SyncState& state = *state_;
  const DType want{is_signed ? DTypeCode::Int : DTypeCode::UInt, static_cast<std::uint8_t>(bytes * 8), 1};
  if (state.dtype != want) {
    return {ValueError::TypeMismatch, "shared array '" + state.name + "' does not hold " +
                                          (is_signed ? std::string("int") : std::string("uint")) +
                                          std::to_string(bytes * 8)};
  }
  if (index >= state.elements) {
    return {ValueError::OutOfRange, "index " + std::to_string(index) + " is past the " +
                                        std::to_string(state.elements) + " elements of '" + state.name + "'"};
  }
  return static_cast<void*>(state.data() + index * bytes);  // NOLINT(cppcoreguidelines-pro-bounds-pointer-arithmetic)
}

const std::string& SharedArray::name() const noexcept {
  return state_->name;
}

std::string_view to_string(ValueError code) noexcept {
  switch (code) {
    case ValueError::TypeMismatch: return "TypeMismatch";
    case ValueError::OutOfRange: return "OutOfRange";
  }
  return "?";
}

}  // namespace hakobu
