// hakobu — Store: the store file's protocol (see store_file.hpp for the
// layout, locking and crash-safety rules this file follows).
#include "hakobu/store.hpp"

#include <sched.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <chrono>
#include <climits>
#include <cstring>
#include <string>
#include <utility>

#include "channel/message_access.hpp"
#include "domain/domain_state.hpp"
#include "domain/named_file.hpp"
#include "platform/os.hpp"
#include "store/store_file.hpp"
#include "support/kill_point.hpp"

namespace hakobu {

static_assert(kMaxStoreKeyBytes == detail::kMaxKeyBytes, "the public key limit is the store layout's");

namespace detail {

class StoreState {
 public:
  std::shared_ptr<DomainState> domain;
  std::string name;
  std::string file;
  NamedFile named{NamedFile::LockBytes{kStoreInitLockByte, kStoreLifecycleLockByte}};
  StoreHeader* header = nullptr;  // named's mapping
  StoreEntry* entries = nullptr;
  std::uint64_t capacity = 0;  // checked at attach; never re-read from the file
  std::uint32_t epoch = 0;
  std::atomic<bool> closed{false};

  StoreState() = default;
  StoreState(const StoreState&) = delete;
  StoreState& operator=(const StoreState&) = delete;
  ~StoreState();

  [[nodiscard]] bool usable() const noexcept {
    return !closed.load(std::memory_order_acquire) && !domain->forked_away() && !unlinked();
  }
  [[nodiscard]] bool unlinked() const noexcept {
    return (header->flags.load(std::memory_order_acquire) & kStoreUnlinked) != 0;
  }
  [[nodiscard]] std::string what() const { return "store '" + name + "'"; }

  /// Points header and entries at named's mapping.
  void use_mapping() noexcept;
  Result<void, OpenError> create(const StoreOptions& options);
  Result<void, OpenError> attach();

  /// An entry found holding a key, with the state it was found in (ready(g)).
  struct Found {
    StoreEntry* entry = nullptr;
    std::uint32_t state = 0;
  };
  /// The entry holding `key` (ready, not retired), or none. Takes no lock.
  [[nodiscard]] Found find(std::string_view key, std::uint64_t hash) const noexcept;
  enum class Claim : std::uint8_t { Found, Full, Busy };
  /// The entry holding `key`, inserting it (under the insert lock) if needed.
  Claim find_or_claim(std::string_view key, std::uint64_t hash, Found& out) noexcept;
  /// Publishes the listed record of `loan` for `key`; the loan is consumed on success.
  Result<std::uint64_t, StorePutError> publish(std::string_view key, std::uint64_t hash, Found found, Loan& record,
                                               std::uint64_t version, bool replace);
  /// The error of a put whose find_or_claim did not find or insert the key.
  [[nodiscard]] Error<StorePutError> claim_error(Claim claim) const;
  /// Wakes Store::wait callers after a publish (the rules are in store_file.hpp).
  void announce_publish() const noexcept;
  /// Drops the store's reference on a record displaced from an entry.
  void drop_record(std::uint64_t packed) noexcept;
  /// Last one out of an unlinked store: drops the references its entries hold.
  void drain() noexcept;
};

namespace {

std::string key_problem(std::string_view key) {
  if (key.empty()) return "a key must not be empty";
  if (key.size() > kMaxKeyBytes) {
    return "a key is at most " + std::to_string(kMaxKeyBytes) + " bytes, got " + std::to_string(key.size());
  }
  return {};
}

}  // namespace

StoreState::~StoreState() {
  // The last handle out of an unlinked store drops what its entries hold
  // (named_file.hpp; nothing is released by a handle inherited across fork()).
  if (header != nullptr && domain && !domain->forked_away()) {
    named.close([this]() noexcept {
      if (unlinked()) drain();
    });
  }
}

void StoreState::use_mapping() noexcept {
  header = reinterpret_cast<StoreHeader*>(named.base());  // NOLINT(cppcoreguidelines-pro-type-reinterpret-cast)
  entries = reinterpret_cast<StoreEntry*>(named.base() + sizeof(StoreHeader));  // NOLINT
}

// Built under a temporary name and published with link() (named_file.hpp): a
// store is seen whole under its name or not at all.
Result<void, OpenError> StoreState::create(const StoreOptions& options) {
  const std::uint64_t cap = std::bit_ceil(std::max<std::uint64_t>(options.capacity, 1));
  const std::uint64_t bytes = store_file_bytes(cap);
  auto created = named.create(*domain, name, file, what(), bytes, [&](std::byte* /*base*/) {
    use_mapping();
    header->layout_version = kStoreLayoutVersion;
    header->capacity = cap;
    header->file_bytes = bytes;
    header->creator_token = domain->token();
    header->creator_pid = platform::process_id();
    header->next_version.store(1, std::memory_order_relaxed);
    header->magic.store(kStoreMagic, std::memory_order_release);  // entries are zero: all free
  });
  if (!created) {
    header = nullptr;
    entries = nullptr;
    return created;
  }
  domain->object_created();
  capacity = cap;
  return {};
}

Result<void, OpenError> StoreState::attach() {
  const std::string damaged = what() + " is damaged; remove it with `hakobu rm " + name + "`";
  NamedFile::AttachRules rules = NamedFile::rules_for(what(), name, sizeof(StoreHeader));
  // From shared memory: checked, then kept in process memory for good.
  rules.check_header = [&](const std::byte* base, std::uint64_t file_size) -> Result<std::uint64_t, OpenError> {
    const auto* h = reinterpret_cast<const StoreHeader*>(base);  // NOLINT(cppcoreguidelines-pro-type-reinterpret-cast)
    if (h->magic.load(std::memory_order_acquire) != kStoreMagic) return {OpenError::Corrupt, damaged};
    if (h->layout_version != kStoreLayoutVersion) {
      return layout_mismatch(what(), h->layout_version, kStoreLayoutVersion);
    }
    const std::uint64_t cap = h->capacity;
    const std::uint64_t bytes = h->file_bytes;
    if (cap == 0 || cap > kMaxStoreCapacity || !std::has_single_bit(cap) || bytes != store_file_bytes(cap) ||
        bytes > file_size) {
      return {OpenError::Corrupt, damaged};
    }
    capacity = cap;
    return bytes;
  };
  rules.unlinked = [](const std::byte* base) {
    const auto* h = reinterpret_cast<const StoreHeader*>(base);  // NOLINT(cppcoreguidelines-pro-type-reinterpret-cast)
    return (h->flags.load(std::memory_order_acquire) & kStoreUnlinked) != 0;
  };
  if (auto attached = named.attach(rules); !attached) return attached;
  use_mapping();
  return {};
}

StoreState::Found StoreState::find(std::string_view key, std::uint64_t hash) const noexcept {
  KeyCopy copy;
  for (std::uint64_t step = 0; step < capacity; ++step) {
    const StoreEntry& entry =
        entries[(hash + step) & (capacity - 1)];  // NOLINT(cppcoreguidelines-pro-bounds-pointer-arithmetic)
    if (entry.state.load(std::memory_order_acquire) == kEntryFree) return {};
    const std::uint32_t state = read_key(entry, copy, &key, hash);
    if (state == 0 || copy.bytes == 0 || copy.view() != key) continue;
    // A retired key is leaving its entry; it may be inserted again further on.
    if (entry.current.load(std::memory_order_acquire) == kValueRetired) continue;
    return {const_cast<StoreEntry*>(&entry), state};  // NOLINT(cppcoreguidelines-pro-type-const-cast)
  }
  return {};
}

namespace {

/// One thread of this process at a time holds (or waits for) an insert lock,
/// of any store: so the lock word naming this process while that thread looks
/// at it is damage or a leftover (no live holder of ours), taken like a dead
/// holder's instead of waited on. Holds fork_epoch() + 1 of the process image
/// whose thread holds it, so a child of fork() never waits for its parent's.
std::atomic<std::uint32_t> g_local_inserter{0};  // NOLINT(cppcoreguidelines-avoid-non-const-global-variables)

/// Holds a store's insert lock (store_file.hpp) for a scope.
class InsertLock {
 public:
  InsertLock(StoreHeader& header, DomainState& domain) noexcept
      : word_(insert_lock(header)), mine_(kInsertLockHeld | domain.token()) {
    // Held for microseconds; a second behind a live holder is a stuck or
    // hostile peer, reported (Busy) rather than waited on for ever.
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    const std::uint32_t image = fork_epoch() + 1;
    for (;;) {
      std::uint32_t local = g_local_inserter.load(std::memory_order_acquire);
      if (local != image && g_local_inserter.compare_exchange_strong(local, image, std::memory_order_acquire)) break;
      if (std::chrono::steady_clock::now() > give_up) return;
      ::sched_yield();
    }
    local_ = true;
    for (;;) {
      std::uint64_t seen = word_.load(std::memory_order_acquire);
      // Free, a value no holder writes (damage), ours (see g_local_inserter) or
      // a dead holder's: ours by CAS.
      const bool takeable = seen == 0 || seen == mine_ || (seen >> 32U) != (kInsertLockHeld >> 32U) ||
                            !domain.token_alive(static_cast<std::uint32_t>(seen));
      if (takeable && word_.compare_exchange_strong(seen, mine_, std::memory_order_acquire)) {
        held_ = true;
        return;
      }
      if (!takeable && std::chrono::steady_clock::now() > give_up) return;
      if (!takeable) ::sched_yield();
    }
  }
  ~InsertLock() {
    if (held_) {
      std::uint64_t expected = mine_;  // taken over meanwhile (we were thought dead): not ours to free
      word_.compare_exchange_strong(expected, 0, std::memory_order_release, std::memory_order_relaxed);
    }
    if (local_) g_local_inserter.store(0, std::memory_order_release);
  }
  InsertLock(const InsertLock&) = delete;
  InsertLock& operator=(const InsertLock&) = delete;
  [[nodiscard]] bool held() const noexcept { return held_; }

 private:
  std::atomic<std::uint64_t>& word_;
  std::uint64_t mine_;
  bool local_ = false;
  bool held_ = false;
};

/// Under the insert lock: takes `entry` from state `state` and gives it `key`
/// (or, with an empty key, retires it: no key, current kValueRetired).
/// False if the state changed first.
bool claim_entry(StoreEntry& entry, std::uint32_t state, std::uint32_t token, std::string_view key,
                 std::uint64_t hash) noexcept {
  if (!entry.state.compare_exchange_strong(state, claiming_state(token), std::memory_order_acquire)) return false;
  kill_point("store.claimed");
  const std::uint64_t generation = (entry.generation.load(std::memory_order_relaxed) + 1) & kGenerationMask;
  write_key(entry, key, hash);
  // Release: whoever reads this empty value (a publisher of the entry's old key)
  // also sees the claim, so its re-read of the state fails and it looks again.
  entry.current.store(key.empty() ? kValueRetired : empty_value(generation), std::memory_order_release);
  entry.generation.store(generation, std::memory_order_relaxed);
  entry.state.store(ready_state(generation), std::memory_order_release);
  return true;
}

}  // namespace

StoreState::Claim StoreState::find_or_claim(std::string_view key, std::uint64_t hash, Found& out) noexcept {
  out = find(key, hash);
  if (out.entry != nullptr) return Claim::Found;  // republishing takes no lock
  const InsertLock lock(*header, *domain);
  if (!lock.held()) return Claim::Busy;
  const std::uint32_t token = domain->token();
  KeyCopy copy;
  // Each round that fails lost a CAS to a publisher or eraser of another key.
  for (int round = 0; round < 1000; ++round) {
    StoreEntry* reusable = nullptr;
    std::uint32_t reusable_state = 0;
    std::uint64_t reusable_current = 0;
    StoreEntry* free_entry = nullptr;
    for (std::uint64_t step = 0; step < capacity; ++step) {
      StoreEntry& entry =
          entries[(hash + step) & (capacity - 1)];  // NOLINT(cppcoreguidelines-pro-bounds-pointer-arithmetic)
      std::uint32_t state = entry.state.load(std::memory_order_acquire);
      if (state == kEntryFree) {
        free_entry = &entry;
        break;
      }
      if (!is_ready(state)) {
        // Claiming: its holder of the insert lock died (only a holder claims);
        // or a state no writer makes. Retired, then reusable like any other.
        (void)claim_entry(entry, state, token, {}, 0);
        state = entry.state.load(std::memory_order_acquire);
        if (!is_ready(state)) continue;
      }
      const std::uint64_t current = entry.current.load(std::memory_order_acquire);
      if (read_key(entry, copy, &key, hash) == state && copy.bytes != 0 && copy.view() == key &&
          current != kValueRetired) {
        out = {&entry, state};  // inserted before we took the lock
        return Claim::Found;
      }
      if (reusable == nullptr && !has_value(current)) {
        reusable = &entry;
        reusable_state = state;
        reusable_current = current;
      }
    }
    if (reusable != nullptr) {
      // The old key leaves first: a publisher of it now fails its CAS.
      if (reusable_current != kValueRetired &&
          !reusable->current.compare_exchange_strong(reusable_current, kValueRetired, std::memory_order_acq_rel)) {
        continue;  // published or erased meanwhile: look again
      }
      if (!claim_entry(*reusable, reusable_state, token, key, hash)) continue;
      out = {reusable, reusable->state.load(std::memory_order_acquire)};
      return Claim::Found;
    }
    if (free_entry == nullptr) return Claim::Full;
    if (!claim_entry(*free_entry, kEntryFree, token, key, hash)) continue;
    out = {free_entry, free_entry->state.load(std::memory_order_acquire)};
    return Claim::Found;
  }
  return Claim::Busy;
}

Error<StorePutError> StoreState::claim_error(Claim claim) const {
  if (claim == Claim::Full) {
    return {StorePutError::Full, what() + " has a value in each of its " + std::to_string(capacity) + " entries"};
  }
  return {StorePutError::Busy, "inserting a key into " + what() + " stayed locked by a live process for a second"};
}

void StoreState::announce_publish() const noexcept {
  header->published.fetch_add(1, std::memory_order_seq_cst);
  if (header->waiters.load(std::memory_order_seq_cst) != 0) platform::futex_wake(&header->published, INT_MAX);
}

void StoreState::drop_record(std::uint64_t packed) noexcept {
  const std::uint64_t record = value_record(packed);
  Heap& heap = domain->heap();
  // The store held this reference; a damaged offset is leaked, never dropped.
  if (record != 0 && heap.check_block(record, kRecordBytes)) heap.drop_ref(record);
}

Result<std::uint64_t, StorePutError> StoreState::publish(std::string_view key, std::uint64_t hash, Found found,
                                                         Loan& record, std::uint64_t version, bool replace) {
  const std::uint64_t block = MessageAccess::block(record);
  const std::uint32_t holding = MessageAccess::holding(record);
  const std::uint64_t packed = pack_value(block, version);
  // Unlisted (the entry stays reserved) before the CAS that hands the
  // reference to the store: killed in between, the record leaks.
  domain->fill_holding(holding, 0);
  kill_point("store.put.unlisted");
  std::uint64_t old = 0;
  for (int tries = 0;; ++tries) {
    old = found.entry->current.load(std::memory_order_acquire);
    // No value must mean the empty value of the generation the key was found
    // in: another generation's (or a damaged word) is another key's entry.
    const bool other_generation = !has_value(old) && old != empty_value(ready_generation(found.state));
    if (old == kValueRetired || other_generation || found.entry->state.load(std::memory_order_acquire) != found.state) {
      // The key left this entry (erased, and the entry reused): look again.
      const Claim claim = tries < 1000 ? find_or_claim(key, hash, found) : Claim::Busy;
      if (claim != Claim::Found) {
        domain->fill_holding(holding, block);  // listed again: the loan frees it
        return claim_error(claim);
      }
      continue;
    }
    if (!replace && has_value(old)) {
      domain->fill_holding(holding, block);
      return {StorePutError::AlreadyExists, "key '" + std::string(key) + "' of " + what() + " has a value"};
    }
    if (found.entry->current.compare_exchange_strong(old, packed, std::memory_order_acq_rel,
                                                     std::memory_order_acquire)) {
      break;
    }
  }
  domain->unreserve_holding(holding);
  MessageAccess::hand_over(record);
  announce_publish();
  kill_point("store.put.swapped");
  if (has_value(old)) {
    drop_record(old);
  } else {
    header->keys.fetch_add(1, std::memory_order_relaxed);
  }
  return version;
}

void StoreState::drain() noexcept {
  for (std::uint64_t i = 0; i < capacity; ++i) {
    StoreEntry& entry = entries[i];  // NOLINT(cppcoreguidelines-pro-bounds-pointer-arithmetic)
    const std::uint64_t old = entry.current.exchange(kValueRetired, std::memory_order_acq_rel);
    if (has_value(old)) drop_record(old);
  }
}

}  // namespace detail

namespace {
constexpr const char* kClosedStore = "the store handle was closed or unlinked";
}  // namespace

std::string_view to_string(StorePutError code) noexcept {
  switch (code) {
    case StorePutError::InvalidKey: return "InvalidKey";
    case StorePutError::AlreadyExists: return "AlreadyExists";
    case StorePutError::Full: return "Full";
    case StorePutError::TooLarge: return "TooLarge";
    case StorePutError::OutOfMemory: return "OutOfMemory";
    case StorePutError::Invalid: return "Invalid";
    case StorePutError::Busy: return "Busy";
    case StorePutError::Closed: return "Closed";
  }
  return "?";
}

std::string_view to_string(StoreGetError code) noexcept {
  switch (code) {
    case StoreGetError::InvalidKey: return "InvalidKey";
    case StoreGetError::NotFound: return "NotFound";
    case StoreGetError::Corrupt: return "Corrupt";
    case StoreGetError::OutOfMemory: return "OutOfMemory";
    case StoreGetError::Busy: return "Busy";
    case StoreGetError::Closed: return "Closed";
  }
  return "?";
}

std::string_view to_string(StoreWaitError code) noexcept {
  switch (code) {
    case StoreWaitError::InvalidKey: return "InvalidKey";
    case StoreWaitError::Timeout: return "Timeout";
    case StoreWaitError::Corrupt: return "Corrupt";
    case StoreWaitError::OutOfMemory: return "OutOfMemory";
    case StoreWaitError::Busy: return "Busy";
    case StoreWaitError::Closed: return "Closed";
  }
  return "?";
}

std::string_view to_string(StoreEraseError code) noexcept {
  switch (code) {
    case StoreEraseError::InvalidKey: return "InvalidKey";
    case StoreEraseError::NotFound: return "NotFound";
    case StoreEraseError::Closed: return "Closed";
  }
  return "?";
}

// --- StoreValue ---------------------------------------------------------------

StoreValue::StoreValue(StoreValue&& other) noexcept {
  *this = std::move(other);
}

StoreValue& StoreValue::operator=(StoreValue&& other) noexcept {
  if (this != &other) {
    reset();
    domain_ = std::move(other.domain_);
    record_ = std::exchange(other.record_, 0);
    value_block_ = std::exchange(other.value_block_, 0);
    holding_ = other.holding_;
    fork_epoch_ = other.fork_epoch_;
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    version_ = other.version_;
    kind_ = other.kind_;
  }
  return *this;
}

StoreValue::~StoreValue() {
  reset();
}

void StoreValue::reset() noexcept {
  // A copy inherited by fork() is the parent's reference: never dropped here.
  if (record_ != 0 && fork_epoch_ == detail::fork_epoch()) domain_->release(holding_, record_);
  record_ = 0;
  value_block_ = 0;
  data_ = nullptr;
  size_ = 0;
  domain_.reset();
}

Result<ArrayView, ArrayError> StoreValue::array() const noexcept {
  if (kind_ != MessageKind::Array) return {ArrayError::NotAnArray, "the value is not an array"};
  if (!valid() || fork_epoch_ != detail::fork_epoch())
    return {ArrayError::Corrupt, "the value handle is not valid here"};
  // parse_array takes writable spans; the view's elements are documented read-only.
  const std::span<std::byte> message{const_cast<std::byte*>(data_),
                                     size_};  // NOLINT(cppcoreguidelines-pro-type-const-cast)
  const std::uint32_t source = array_data_attachment(message);
  if (source == 0) return parse_array(message);
  // The elements are an attachment of the value's block (an array sent by reference).
  const std::span<std::byte> elements = attached(source - 1);
  if (elements.data() == nullptr) return {ArrayError::Corrupt, "the array's elements are not attached to the value"};
  return parse_array(message, elements);
}

std::span<std::byte> StoreValue::attached(std::size_t index) const noexcept {
  if (!valid() || value_block_ == 0 || fork_epoch_ != detail::fork_epoch()) return {};
  detail::Heap& heap = domain_->heap();
  const auto table = heap.attachments(value_block_);
  if (index >= table.size()) return {};
  // Written before the value was published and never after; checked all the same.
  const std::uint64_t child = table[index].load(std::memory_order_acquire);
  if (child == 0 || !heap.check_block(child, 0)) return {};
  const std::uint64_t bytes = heap.header(child)->payload_bytes.load(std::memory_order_relaxed);
  std::byte* const payload = heap.checked_payload(child, bytes);
  if (payload == nullptr) return {};
  return {payload, static_cast<std::size_t>(bytes)};
}

std::size_t StoreValue::attachment_count() const noexcept {
  if (!valid() || value_block_ == 0 || fork_epoch_ != detail::fork_epoch()) return 0;
  return domain_->heap().attachments(value_block_).size();
}

Result<std::span<const std::byte>, StoreGetError> StoreValue::attachment(std::size_t index) const {
  const std::span<std::byte> bytes = attached(index);
  if (bytes.data() == nullptr) {
    return {StoreGetError::Corrupt, "the value has no attachment " + std::to_string(index) + " that passes checks"};
  }
  return std::span<const std::byte>(bytes);
}

// --- Store ----------------------------------------------------------------------

Result<Store, OpenError> Store::open(std::string_view name, OpenMode mode, const StoreOptions& options) {
  if (auto why = validate_name(name); !why.empty()) {
    return {OpenError::InvalidName, "invalid store name '" + std::string(name) + "': " + why};
  }
  if (options.capacity == 0 || options.capacity > detail::kMaxStoreCapacity) {
    return {OpenError::InvalidArgument, "capacity must be between 1 and " + std::to_string(detail::kMaxStoreCapacity) +
                                            ", got " + std::to_string(options.capacity)};
  }
  auto domain = detail::DomainState::attach(options.domain);
  if (!domain) return std::move(domain).error();
  auto state = std::make_shared<detail::StoreState>();
  state->domain = *domain;
  state->name = std::string(name);
  state->file = state->domain->file_name("st:" + state->name);
  state->epoch = detail::fork_epoch();
  const detail::DomainFile file{state->file, true, state->what()};
  auto opened = detail::open_by_mode(
      state->named, file, mode, "no " + state->what() + " in domain '" + state->domain->name() + "'",
      [&] { return state->attach(); }, [&] { return state->create(options); });
  if (!opened) return std::move(opened).error();
  return Store(std::move(state));
}

Store::~Store() = default;

Result<Loan, LoanError> Store::loan(std::size_t size, MessageKind kind, std::size_t attachments) {
  if (!state_ || !state_->usable()) return {LoanError::Closed, kClosedStore};
  return state_->domain->make_loan(size, kind, attachments);
}

Result<std::uint64_t, StorePutError> Store::put(std::string_view key, Loan&& value, bool replace) {
  if (!state_ || !state_->usable()) return {StorePutError::Closed, kClosedStore};
  if (auto why = detail::key_problem(key); !why.empty()) return {StorePutError::InvalidKey, why};
  detail::DomainState& domain = *state_->domain;
  if (!value.valid() || detail::MessageAccess::domain(value) != &domain ||
      detail::MessageAccess::fork_epoch(value) != detail::fork_epoch()) {
    return {StorePutError::Invalid, "the loan is empty, was sent, or belongs to another domain"};
  }
  const std::uint64_t hash = detail::key_hash(key.data(), key.size());
  detail::StoreState::Found found;
  if (auto claim = state_->find_or_claim(key, hash, found); claim != detail::StoreState::Claim::Found) {
    return state_->claim_error(claim);
  }
  // The record: its header, and one attachment, the value's block (a counted
  // reference of its own; the loan's is dropped when the loan goes).
  auto record = domain.make_loan(detail::kRecordBytes, MessageKind::Bytes, 1);
  if (!record) {
    return {record.error().code == LoanError::OutOfMemory ? StorePutError::OutOfMemory : StorePutError::TooLarge,
            record.error().message};
  }
  if (auto attached = record->attach(value); !attached) return {StorePutError::Invalid, attached.error().message};
  const std::uint64_t version = state_->header->next_version.fetch_add(1, std::memory_order_relaxed);
  detail::StoreRecord head{};
  head.magic = detail::kRecordMagic;
  head.version = version;
  head.size = value.bytes().size();
  head.kind = static_cast<std::uint32_t>(value.kind());
  head.where = detail::kRecordAttached;
  std::memcpy(record->bytes().data(), &head, sizeof head);
  auto published = state_->publish(key, hash, found, *record, version, replace);
  if (published) value = Loan();  // the record holds the value now
  return published;
}

Result<std::uint64_t, StorePutError> Store::put(std::string_view key, std::span<const std::byte> bytes,
                                                MessageKind kind, bool replace) {
  if (!state_ || !state_->usable()) return {StorePutError::Closed, kClosedStore};
  if (auto why = detail::key_problem(key); !why.empty()) return {StorePutError::InvalidKey, why};
  const std::uint64_t hash = detail::key_hash(key.data(), key.size());
  detail::StoreState::Found found;
  if (auto claim = state_->find_or_claim(key, hash, found); claim != detail::StoreState::Claim::Found) {
    return state_->claim_error(claim);
  }
  if (bytes.size() > state_->domain->heap().capacity()) {
    return {StorePutError::TooLarge, "a value of " + detail::format_bytes(bytes.size()) +
                                         " does not fit the domain heap of " +
                                         detail::format_bytes(state_->domain->heap().capacity())};
  }
  if (bytes.size() > detail::kMaxInlineValueBytes) {
    // A block of its own, attached to a small record (store_file.hpp,
    // "Records": a record block is never a huge-page block). One copy in still.
    auto value = state_->domain->make_loan(bytes.size(), kind);
    if (!value) {
      return {value.error().code == LoanError::OutOfMemory ? StorePutError::OutOfMemory : StorePutError::TooLarge,
              value.error().message};
    }
    std::memcpy(value->bytes().data(), bytes.data(), bytes.size());
    return put(key, std::move(*value), replace);
  }
  // One block: the record's header, then the bytes (one copy in).
  auto record = state_->domain->make_loan(detail::kRecordBytes + bytes.size(), kind);
  if (!record) {
    return {record.error().code == LoanError::OutOfMemory ? StorePutError::OutOfMemory : StorePutError::TooLarge,
            record.error().message};
  }
  const std::uint64_t version = state_->header->next_version.fetch_add(1, std::memory_order_relaxed);
  detail::StoreRecord head{};
  head.magic = detail::kRecordMagic;
  head.version = version;
  head.size = bytes.size();
  head.kind = static_cast<std::uint32_t>(kind);
  head.where = detail::kRecordInline;
  std::memcpy(record->bytes().data(), &head, sizeof head);
  if (!bytes.empty()) std::memcpy(record->bytes().data() + detail::kRecordBytes, bytes.data(), bytes.size());
  return state_->publish(key, hash, found, *record, version, replace);
}

Result<StoreValue, StoreGetError> Store::get(std::string_view key) const {
  if (!state_ || !state_->usable()) return {StoreGetError::Closed, kClosedStore};
  if (auto why = detail::key_problem(key); !why.empty()) return {StoreGetError::InvalidKey, why};
  const std::uint64_t hash = detail::key_hash(key.data(), key.size());
  detail::StoreState::Found found = state_->find(key, hash);
  // Messages are built only when returned: a lookup that succeeds makes no string.
  const auto missing = [&] { return "no value for key '" + std::string(key) + "' in " + state_->what(); };
  if (found.entry == nullptr) return {StoreGetError::NotFound, missing()};
  detail::DomainState& domain = *state_->domain;
  detail::Heap& heap = domain.heap();
  auto holding = domain.reserve_holding();
  if (!holding) return {StoreGetError::OutOfMemory, holding.error().message};
  const auto damaged = [&] {
    return "the value of key '" + std::string(key) + "' in " + state_->what() + " is damaged";
  };
  // Bounded: a key republished during every try is reported, not chased for ever.
  constexpr int kTries = 1000;
  for (int attempt = 0; attempt < kTries; ++attempt) {
    detail::StoreEntry* const entry = found.entry;
    const std::uint64_t seen = entry->current.load(std::memory_order_acquire);
    // Still the state it was found in: the entry held the key while `seen` was read.
    const bool same_key = seen != detail::kValueRetired && entry->state.load(std::memory_order_acquire) == found.state;
    if (!same_key) found = state_->find(key, hash);  // the key left this entry: look again
    if (found.entry == nullptr || (same_key && !detail::has_value(seen))) {
      domain.unreserve_holding(*holding);
      return {StoreGetError::NotFound, missing()};
    }
    if (!same_key) continue;
    const std::uint64_t record = detail::value_record(seen);
    if (!heap.check_block(record, detail::kRecordBytes)) {
      domain.unreserve_holding(*holding);
      return {StoreGetError::Corrupt, damaged()};
    }
    if (!heap.add_ref(record)) {
      // Free. Legitimately only when the entry changed since `seen` (a writer
      // swaps before it drops). Reading refs = 0 with acquire synchronizes with
      // the drop that made it 0, so the second read of `current` sees any swap
      // before it: an unchanged entry naming a free block is damage, not a race.
      if (heap.header(record)->refs.load(std::memory_order_acquire) == 0 &&
          entry->current.load(std::memory_order_acquire) == seen) {
        domain.unreserve_holding(*holding);
        return {StoreGetError::Corrupt, damaged()};
      }
      continue;
    }
    detail::kill_point("store.get.counted");
    domain.fill_holding(*holding, record);
    if (entry->current.load(std::memory_order_acquire) != seen ||
        entry->state.load(std::memory_order_acquire) != found.state) {
      // Maybe not the record any more: give back what was taken, try again.
      domain.fill_holding(*holding, 0);
      heap.drop_ref(record);
      continue;
    }
    // Held: the record is immutable now. Checked before use all the same.
    StoreValue out;
    out.domain_ = state_->domain;
    out.record_ = record;
    out.holding_ = *holding;
    out.fork_epoch_ = detail::fork_epoch();
    const std::byte* payload = heap.checked_payload(record, detail::kRecordBytes);
    detail::StoreRecord head{};
    if (payload != nullptr) std::memcpy(&head, payload, sizeof head);
    const bool kind_ok = head.kind >= static_cast<std::uint32_t>(MessageKind::Bytes) &&
                         head.kind <= static_cast<std::uint32_t>(MessageKind::Object);
    if (payload == nullptr || head.magic != detail::kRecordMagic || !kind_ok ||
        detail::value_version_bits(seen) != (head.version & 0xFF'FFFFU)) {
      return {StoreGetError::Corrupt, damaged()};  // `out` releases the reference
    }
    out.kind_ = static_cast<MessageKind>(head.kind);
    out.version_ = head.version;
    if (head.where == detail::kRecordInline) {
      if (head.size > heap.capacity()) return {StoreGetError::Corrupt, damaged()};
      const std::byte* all = heap.checked_payload(record, detail::kRecordBytes + head.size);
      if (all == nullptr) return {StoreGetError::Corrupt, damaged()};
      out.data_ = all + detail::kRecordBytes;
    } else if (head.where == detail::kRecordAttached) {
      const auto table = heap.attachments(record);
      const std::uint64_t value = table.empty() ? 0 : table[0].load(std::memory_order_acquire);
      const std::byte* data =
          value == 0 || head.size > heap.capacity() ? nullptr : heap.checked_payload(value, head.size);
      if (data == nullptr) return {StoreGetError::Corrupt, damaged()};
      out.value_block_ = value;
      out.data_ = data;
    } else {
      return {StoreGetError::Corrupt, damaged()};
    }
    out.size_ = head.size;
    return out;
  }
  domain.unreserve_holding(*holding);
  return {StoreGetError::Busy, "key '" + std::string(key) + "' was republished or moved during each of " +
                                   std::to_string(kTries) + " tries to read it"};
}

// Waiting rules: store_file.hpp ("Waiting for a key"). Every pass is one
// lookup and at most one sleep of kStoreWaitPollNs; the loop ends at the
// deadline, when the handle is closed or the store unlinked, or on a value.
Result<StoreValue, StoreWaitError> Store::wait_for(std::string_view key, std::chrono::nanoseconds timeout) const {
  if (!state_ || !state_->usable()) return {StoreWaitError::Closed, kClosedStore};
  if (auto why = detail::key_problem(key); !why.empty()) return {StoreWaitError::InvalidKey, why};
  const std::int64_t start = platform::monotonic_ns();
  const std::int64_t ns = std::max<std::int64_t>(timeout.count(), 0);
  const std::int64_t deadline = timeout == std::chrono::nanoseconds::max() || ns > INT64_MAX - start ? -1 : start + ns;
  std::atomic<std::uint32_t>& word = state_->header->published;
  std::atomic<std::uint32_t>& waiters = state_->header->waiters;
  for (;;) {
    const std::uint32_t seen = word.load(std::memory_order_seq_cst);  // before the lookup (see the rules)
    auto got = get(key);
    if (got) return std::move(got).value();
    switch (got.error().code) {
      case StoreGetError::NotFound: break;
      case StoreGetError::InvalidKey: return {StoreWaitError::InvalidKey, got.error().message};
      case StoreGetError::Corrupt: return {StoreWaitError::Corrupt, got.error().message};
      case StoreGetError::OutOfMemory: return {StoreWaitError::OutOfMemory, got.error().message};
      case StoreGetError::Busy: return {StoreWaitError::Busy, got.error().message};
      case StoreGetError::Closed: return {StoreWaitError::Closed, got.error().message};
    }
    const std::int64_t now = platform::monotonic_ns();
    if (deadline >= 0 && now >= deadline) {
      return {StoreWaitError::Timeout,
              "no value for key '" + std::string(key) + "' in " + state_->what() + " within the timeout"};
    }
    const std::int64_t poll = now + detail::kStoreWaitPollNs;
    waiters.fetch_add(1, std::memory_order_seq_cst);
    if (state_->usable()) (void)platform::futex_wait(&word, seen, deadline < 0 ? poll : std::min(deadline, poll));
    waiters.fetch_sub(1, std::memory_order_relaxed);
    if (!state_->usable()) return {StoreWaitError::Closed, kClosedStore};
  }
}

Result<void, StoreEraseError> Store::erase(std::string_view key) {
  if (!state_ || !state_->usable()) return {StoreEraseError::Closed, kClosedStore};
  if (auto why = detail::key_problem(key); !why.empty()) return {StoreEraseError::InvalidKey, why};
  const std::uint64_t hash = detail::key_hash(key.data(), key.size());
  const auto missing = [&] { return "no value for key '" + std::string(key) + "' in " + state_->what(); };
  detail::StoreState::Found found = state_->find(key, hash);
  std::uint64_t old = 0;
  for (int attempt = 0;; ++attempt) {
    if (found.entry == nullptr) return {StoreEraseError::NotFound, missing()};
    old = found.entry->current.load(std::memory_order_acquire);
    if (old == detail::kValueRetired || found.entry->state.load(std::memory_order_acquire) != found.state) {
      // The key left this entry (store_file.hpp): look again, a bounded number of times.
      if (attempt == 1000) return {StoreEraseError::NotFound, missing()};
      found = state_->find(key, hash);
      continue;
    }
    if (!detail::has_value(old)) return {StoreEraseError::NotFound, missing()};
    const std::uint64_t empty = detail::empty_value(detail::ready_generation(found.state));
    if (found.entry->current.compare_exchange_strong(old, empty, std::memory_order_acq_rel)) break;
  }
  detail::kill_point("store.erase.swapped");
  state_->header->keys.fetch_sub(1, std::memory_order_relaxed);
  state_->drop_record(old);
  return {};
}

std::vector<std::string> Store::keys() const {
  std::vector<std::string> out;
  if (!state_ || !state_->usable()) return out;
  detail::KeyCopy copy;
  for (std::uint64_t i = 0; i < state_->capacity; ++i) {
    const detail::StoreEntry& entry = state_->entries[i];  // NOLINT(cppcoreguidelines-pro-bounds-pointer-arithmetic)
    if (detail::read_key(entry, copy) == 0 || copy.bytes == 0) continue;  // no key (or damaged: not a key)
    if (!detail::has_value(entry.current.load(std::memory_order_acquire))) continue;
    out.emplace_back(copy.view());
  }
  return out;
}

std::size_t Store::capacity() const noexcept {
  return state_ ? state_->capacity : 0;
}

Result<void, UnlinkError> Store::unlink() {
  if (!state_ || !state_->usable()) return {UnlinkError::Closed, kClosedStore};
  const std::uint32_t old = state_->header->flags.fetch_or(detail::kStoreUnlinked, std::memory_order_acq_rel);
  if ((old & detail::kStoreUnlinked) != 0) return {UnlinkError::NotFound, state_->what() + " was already removed"};
  detail::remove_if_same({state_->file, true, state_->what()}, state_->named.fd());  // never a newer store of that name
  state_->domain->object_removed();
  close();
  return {};
}

void Store::close() noexcept {
  if (!state_) return;
  state_->closed.store(true, std::memory_order_release);
  state_.reset();  // the last handle out of an unlinked store drains it (StoreState's destructor)
}

const std::string& Store::name() const noexcept {
  static const std::string empty;
  return state_ ? state_->name : empty;
}

}  // namespace hakobu
