// hakobu — Store: the store file's protocol (see store_file.hpp for the
// layout, locking and crash-safety rules this file follows).
#include "hakobu/store.hpp"

#include <sched.h>

#include <algorithm>
#include <bit>
#include <chrono>
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

  /// The entry holding `key` (Ready), or nullptr. Readers skip claimed entries.
  [[nodiscard]] StoreEntry* find(std::string_view key, std::uint64_t hash) const noexcept;
  enum class Claim : std::uint8_t { Found, Full, Busy };
  /// The entry holding `key`, claiming a free one for it if needed.
  Claim find_or_claim(std::string_view key, std::uint64_t hash, StoreEntry*& out) noexcept;
  /// Publishes the listed record of `loan` in `entry`; the loan is consumed on success.
  Result<std::uint64_t, StorePutError> publish(StoreEntry& entry, Loan& record, std::uint64_t version, bool replace);
  /// Drops the store's reference on a record displaced from an entry.
  void drop_record(std::uint64_t packed) noexcept;
  /// Last one out of an unlinked store: drops the references its entries hold.
  void drain() noexcept;
};

namespace {

bool key_matches(const StoreEntry& entry, std::string_view key, std::uint64_t hash) noexcept {
  // Written once before Ready and never after; still bounds-checked: a
  // damaged or hostile file may say anything.
  const std::uint32_t length = entry.key_bytes;
  return entry.key_hash == hash && length == key.size() && length <= kMaxKeyBytes &&
         std::memcmp(entry.key, key.data(), length) == 0;
}

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
  NamedFile::AttachRules rules;
  rules.header_bytes = sizeof(StoreHeader);
  rules.too_small = damaged;
  rules.removed = what() + " was removed";
  // From shared memory: checked, then kept in process memory for good.
  rules.check_header = [&](const std::byte* base, std::uint64_t file_size) -> Result<std::uint64_t, OpenError> {
    const auto* h = reinterpret_cast<const StoreHeader*>(base);  // NOLINT(cppcoreguidelines-pro-type-reinterpret-cast)
    if (h->magic.load(std::memory_order_acquire) != kStoreMagic) return {OpenError::Corrupt, damaged};
    if (h->layout_version != kStoreLayoutVersion) {
      return {OpenError::Incompatible, what() + " has layout version " + std::to_string(h->layout_version) +
                                           ", this library knows " + std::to_string(kStoreLayoutVersion)};
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

StoreEntry* StoreState::find(std::string_view key, std::uint64_t hash) const noexcept {
  for (std::uint64_t step = 0; step < capacity; ++step) {
    StoreEntry& entry =
        entries[(hash + step) & (capacity - 1)];  // NOLINT(cppcoreguidelines-pro-bounds-pointer-arithmetic)
    const std::uint32_t state = entry.state.load(std::memory_order_acquire);
    if (state == kEntryFree) return nullptr;
    if (state == kEntryReady && key_matches(entry, key, hash)) return &entry;
  }
  return nullptr;
}

StoreState::Claim StoreState::find_or_claim(std::string_view key, std::uint64_t hash, StoreEntry*& out) noexcept {
  const std::uint32_t mine = claiming_state(domain->token());
  for (std::uint64_t step = 0; step < capacity; ++step) {
    StoreEntry& entry =
        entries[(hash + step) & (capacity - 1)];  // NOLINT(cppcoreguidelines-pro-bounds-pointer-arithmetic)
    // A claim takes microseconds; one held a whole second by a live process is
    // a stuck or hostile peer, reported rather than waited on for ever.
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    for (;;) {
      std::uint32_t state = entry.state.load(std::memory_order_acquire);
      if (state == kEntryReady) {
        if (key_matches(entry, key, hash)) {
          out = &entry;
          return Claim::Found;
        }
        break;  // another key: probe on
      }
      const bool free = state == kEntryFree;
      const bool orphaned = is_claiming(state) && !domain->token_alive(claiming_token(state));
      if (free || orphaned || (state != kEntryReady && !is_claiming(state))) {
        // Free, claimed by a dead writer, or a state no writer makes (damage): ours.
        if (!entry.state.compare_exchange_strong(state, mine, std::memory_order_acquire)) continue;
        kill_point("store.claimed");
        entry.key_bytes = static_cast<std::uint32_t>(key.size());
        entry.key_hash = hash;
        std::memcpy(entry.key, key.data(), key.size());
        entry.current.store(0, std::memory_order_relaxed);
        entry.state.store(kEntryReady, std::memory_order_release);
        out = &entry;
        return Claim::Found;
      }
      if (std::chrono::steady_clock::now() > give_up) return Claim::Busy;
      ::sched_yield();  // claimed by a live writer: it finishes in a few instructions
    }
  }
  return Claim::Full;
}

void StoreState::drop_record(std::uint64_t packed) noexcept {
  const std::uint64_t record = value_record(packed);
  Heap& heap = domain->heap();
  // The store held this reference; a damaged offset is leaked, never dropped.
  if (record != 0 && heap.check_block(record, kRecordBytes)) heap.drop_ref(record);
}

Result<std::uint64_t, StorePutError> StoreState::publish(StoreEntry& entry, Loan& record, std::uint64_t version,
                                                         bool replace) {
  const std::uint64_t block = MessageAccess::block(record);
  const std::uint32_t holding = MessageAccess::holding(record);
  const std::uint64_t packed = pack_value(block, version);
  // Unlisted (the entry stays reserved) before the CAS that hands the
  // reference to the store: killed in between, the record leaks.
  domain->fill_holding(holding, 0);
  kill_point("store.put.unlisted");
  std::uint64_t old = entry.current.load(std::memory_order_acquire);
  for (;;) {
    if (!replace && old != 0) {
      domain->fill_holding(holding, block);  // listed again: the loan frees it
      return {StorePutError::AlreadyExists,
              "key '" + std::string(entry.key, std::min<std::size_t>(entry.key_bytes, kMaxKeyBytes)) + "' of " +
                  what() + " has a value"};
    }
    if (entry.current.compare_exchange_weak(old, packed, std::memory_order_acq_rel, std::memory_order_acquire)) break;
  }
  domain->unreserve_holding(holding);
  MessageAccess::hand_over(record);
  kill_point("store.put.swapped");
  if (old == 0) {
    header->keys.fetch_add(1, std::memory_order_relaxed);
  } else {
    drop_record(old);
  }
  return version;
}

void StoreState::drain() noexcept {
  for (std::uint64_t i = 0; i < capacity; ++i) {
    StoreEntry& entry = entries[i];  // NOLINT(cppcoreguidelines-pro-bounds-pointer-arithmetic)
    const std::uint64_t old = entry.current.exchange(0, std::memory_order_acq_rel);
    if (old != 0) drop_record(old);
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
  if (value_block_ == 0) return {ArrayError::Corrupt, "the array's elements are not attached to the value"};
  detail::Heap& heap = domain_->heap();
  const auto table = heap.attachments(value_block_);
  if (source - 1 >= table.size()) return {ArrayError::Corrupt, "the array's elements are not attached to the value"};
  const std::uint64_t child = table[source - 1].load(std::memory_order_acquire);
  if (child == 0 || !heap.check_block(child, 0)) return {ArrayError::Corrupt, "the array's elements failed checks"};
  const std::uint64_t bytes = heap.header(child)->payload_bytes.load(std::memory_order_relaxed);
  std::byte* const payload = heap.checked_payload(child, bytes);
  if (payload == nullptr) return {ArrayError::Corrupt, "the array's elements failed checks"};
  return parse_array(message, {payload, static_cast<std::size_t>(bytes)});
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
  for (int attempt = 0; attempt < 100; ++attempt) {
    if (mode != OpenMode::CreateExclusive) {
      auto opened = state->named.open(file);
      if (opened) {
        auto attached = state->attach();
        if (attached) return Store(std::move(state));
        if (attached.error().code != OpenError::NotFound || mode == OpenMode::AttachOnly) {
          return std::move(attached).error();
        }
        continue;  // removed while we attached: look again
      }
      if (opened.error().code != OpenError::NotFound) return std::move(opened).error();
      if (mode == OpenMode::AttachOnly) {
        return {OpenError::NotFound, "no " + state->what() + " in domain '" + state->domain->name() + "'"};
      }
    }
    auto created = state->create(options);
    if (created) return Store(std::move(state));
    if (created.error().code != OpenError::AlreadyExists || mode == OpenMode::CreateExclusive) {
      return std::move(created).error();
    }
  }
  return {OpenError::SystemError, "store '" + std::string(name) + "' is being created and removed too often"};
}

Store::~Store() = default;

Result<Loan, LoanError> Store::loan(std::size_t size, MessageKind kind) {
  if (!state_ || !state_->usable()) return {LoanError::Closed, kClosedStore};
  return state_->domain->make_loan(size, kind);
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
  detail::StoreEntry* entry = nullptr;
  switch (state_->find_or_claim(key, hash, entry)) {
    case detail::StoreState::Claim::Found: break;
    case detail::StoreState::Claim::Full:
      return {StorePutError::Full,
              state_->what() + " has a key in each of its " + std::to_string(state_->capacity) + " entries"};
    case detail::StoreState::Claim::Busy:
      return {StorePutError::Busy, "the entry for this key stayed claimed by a live process for a second"};
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
  auto published = state_->publish(*entry, *record, version, replace);
  if (published) value = Loan();  // the record holds the value now
  return published;
}

Result<std::uint64_t, StorePutError> Store::put(std::string_view key, std::span<const std::byte> bytes,
                                                MessageKind kind, bool replace) {
  if (!state_ || !state_->usable()) return {StorePutError::Closed, kClosedStore};
  if (auto why = detail::key_problem(key); !why.empty()) return {StorePutError::InvalidKey, why};
  const std::uint64_t hash = detail::key_hash(key.data(), key.size());
  detail::StoreEntry* entry = nullptr;
  switch (state_->find_or_claim(key, hash, entry)) {
    case detail::StoreState::Claim::Found: break;
    case detail::StoreState::Claim::Full:
      return {StorePutError::Full,
              state_->what() + " has a key in each of its " + std::to_string(state_->capacity) + " entries"};
    case detail::StoreState::Claim::Busy:
      return {StorePutError::Busy, "the entry for this key stayed claimed by a live process for a second"};
  }
  if (bytes.size() > state_->domain->heap().capacity()) {
    return {StorePutError::TooLarge, "a value of " + detail::format_bytes(bytes.size()) +
                                         " does not fit the domain heap of " +
                                         detail::format_bytes(state_->domain->heap().capacity())};
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
  return state_->publish(*entry, *record, version, replace);
}

Result<StoreValue, StoreGetError> Store::get(std::string_view key) const {
  if (!state_ || !state_->usable()) return {StoreGetError::Closed, kClosedStore};
  if (auto why = detail::key_problem(key); !why.empty()) return {StoreGetError::InvalidKey, why};
  const std::uint64_t hash = detail::key_hash(key.data(), key.size());
  detail::StoreEntry* entry = state_->find(key, hash);
  const std::string missing = "no value for key '" + std::string(key) + "' in " + state_->what();
  if (entry == nullptr) return {StoreGetError::NotFound, missing};
  detail::DomainState& domain = *state_->domain;
  detail::Heap& heap = domain.heap();
  auto holding = domain.reserve_holding();
  if (!holding) return {StoreGetError::OutOfMemory, holding.error().message};
  const std::string damaged = "the value of key '" + std::string(key) + "' in " + state_->what() + " is damaged";
  // Bounded: a key republished during every try is reported, not chased for ever.
  constexpr int kTries = 1000;
  for (int attempt = 0; attempt < kTries; ++attempt) {
    const std::uint64_t seen = entry->current.load(std::memory_order_acquire);
    if (seen == 0) {
      domain.unreserve_holding(*holding);
      return {StoreGetError::NotFound, missing};
    }
    const std::uint64_t record = detail::value_record(seen);
    if (!heap.check_block(record, detail::kRecordBytes)) {
      domain.unreserve_holding(*holding);
      return {StoreGetError::Corrupt, damaged};
    }
    if (!heap.add_ref(record)) {
      // Free. Legitimately only when the entry changed since `seen` (a writer
      // swaps before it drops). Reading refs = 0 with acquire synchronizes with
      // the drop that made it 0, so the second read of `current` sees any swap
      // before it: an unchanged entry naming a free block is damage, not a race.
      if (heap.header(record)->refs.load(std::memory_order_acquire) == 0 &&
          entry->current.load(std::memory_order_acquire) == seen) {
        domain.unreserve_holding(*holding);
        return {StoreGetError::Corrupt, damaged};
      }
      continue;
    }
    detail::kill_point("store.get.counted");
    domain.fill_holding(*holding, record);
    if (entry->current.load(std::memory_order_acquire) != seen) {
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
      return {StoreGetError::Corrupt, damaged};  // `out` releases the reference
    }
    out.kind_ = static_cast<MessageKind>(head.kind);
    out.version_ = head.version;
    if (head.where == detail::kRecordInline) {
      if (head.size > heap.capacity()) return {StoreGetError::Corrupt, damaged};
      const std::byte* all = heap.checked_payload(record, detail::kRecordBytes + head.size);
      if (all == nullptr) return {StoreGetError::Corrupt, damaged};
      out.data_ = all + detail::kRecordBytes;
    } else if (head.where == detail::kRecordAttached) {
      const auto table = heap.attachments(record);
      const std::uint64_t value = table.empty() ? 0 : table[0].load(std::memory_order_acquire);
      const std::byte* data =
          value == 0 || head.size > heap.capacity() ? nullptr : heap.checked_payload(value, head.size);
      if (data == nullptr) return {StoreGetError::Corrupt, damaged};
      out.value_block_ = value;
      out.data_ = data;
    } else {
      return {StoreGetError::Corrupt, damaged};
    }
    out.size_ = head.size;
    return out;
  }
  domain.unreserve_holding(*holding);
  return {StoreGetError::Busy, "key '" + std::string(key) + "' was republished during each of " +
                                   std::to_string(kTries) + " tries to read it"};
}

Result<void, StoreEraseError> Store::erase(std::string_view key) {
  if (!state_ || !state_->usable()) return {StoreEraseError::Closed, kClosedStore};
  if (auto why = detail::key_problem(key); !why.empty()) return {StoreEraseError::InvalidKey, why};
  const std::uint64_t hash = detail::key_hash(key.data(), key.size());
  detail::StoreEntry* entry = state_->find(key, hash);
  const std::uint64_t old = entry == nullptr ? 0 : entry->current.exchange(0, std::memory_order_acq_rel);
  if (old == 0) return {StoreEraseError::NotFound, "no value for key '" + std::string(key) + "' in " + state_->what()};
  detail::kill_point("store.erase.swapped");
  state_->header->keys.fetch_sub(1, std::memory_order_relaxed);
  state_->drop_record(old);
  return {};
}

std::vector<std::string> Store::keys() const {
  std::vector<std::string> out;
  if (!state_ || !state_->usable()) return out;
  for (std::uint64_t i = 0; i < state_->capacity; ++i) {
    const detail::StoreEntry& entry = state_->entries[i];  // NOLINT(cppcoreguidelines-pro-bounds-pointer-arithmetic)
    if (entry.state.load(std::memory_order_acquire) != detail::kEntryReady) continue;
    if (entry.current.load(std::memory_order_acquire) == 0) continue;
    const std::uint32_t length = entry.key_bytes;
    if (length == 0 || length > detail::kMaxKeyBytes) continue;  // damaged: not a key
    out.emplace_back(entry.key, length);
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
