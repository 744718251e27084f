// hakobu — Store: named, immutable values by key, read by any process without
// a copy.
//
// A store lives in a domain under a name, like a queue, and outlives the
// processes that use it until it is unlinked. `put(key, ...)` publishes a value
// (bytes, an array message, a serialized object); `get(key)` returns a read-only
// handle on the current value, in shared memory. Publishing a key again makes a
// new version: handles on the old one keep it, later lookups see the new one.
// A value's memory returns to the heap once it was replaced or erased and its
// last handle is gone, in whatever process. A publisher killed at any point
// leaves the old value or the new one, never a torn one (at worst a leak).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "hakobu/array.hpp"
#include "hakobu/domain.hpp"
#include "hakobu/error.hpp"
#include "hakobu/message.hpp"
#include "hakobu/queue.hpp"

namespace hakobu {

namespace detail {
class StoreState;
}  // namespace detail

/// Longest key, in bytes.
inline constexpr std::size_t kMaxStoreKeyBytes = 224;

/// Why `Store::put` failed. On every error the store is left as it was.
enum class StorePutError : std::uint8_t {
  InvalidKey,     ///< Empty, or longer than kMaxStoreKeyBytes.
  AlreadyExists,  ///< `replace = false` and the key has a value.
  Full,           ///< Every entry of the store's table has a key (erased keys keep theirs).
  TooLarge,       ///< Larger than the domain's heap.
  OutOfMemory,    ///< Shared memory is full; the message says how much was asked and is free.
  Invalid,        ///< The loan is empty, was sent, or belongs to another domain.
  Busy,           ///< Another process kept the key's entry claimed for a whole second while alive.
  Closed,         ///< This handle was closed or unlinked.
};

/// Why `Store::get` failed.
enum class StoreGetError : std::uint8_t {
  InvalidKey,   ///< Empty, or longer than kMaxStoreKeyBytes.
  NotFound,     ///< The key has no value (never published, or erased).
  Corrupt,      ///< The entry or its record failed bounds checks (the store file was damaged).
  OutOfMemory,  ///< No room to record the reference as held; nothing was taken.
  Busy,         ///< The key was republished during every one of many tries.
  Closed,       ///< This handle was closed or unlinked.
};

/// Why `Store::erase` failed.
enum class StoreEraseError : std::uint8_t {
  InvalidKey,  ///< Empty, or longer than kMaxStoreKeyBytes.
  NotFound,    ///< The key has no value.
  Closed,      ///< This handle was closed or unlinked.
};

/// Why `Store::wait` failed.
enum class StoreWaitError : std::uint8_t {
  InvalidKey,   ///< Empty, or longer than kMaxStoreKeyBytes.
  Timeout,      ///< The key had no value when the timeout ran out.
  Corrupt,      ///< The entry or its record failed bounds checks (the store file was damaged).
  OutOfMemory,  ///< No room to record the reference as held; nothing was taken.
  Busy,         ///< The key was republished during every one of many tries.
  Closed,       ///< This handle was closed or unlinked (before or during the wait).
};

std::string_view to_string(StorePutError code) noexcept;
std::string_view to_string(StoreGetError code) noexcept;
std::string_view to_string(StoreEraseError code) noexcept;
std::string_view to_string(StoreWaitError code) noexcept;

/// Settings a store is created with; attaching keeps the existing capacity.
struct StoreOptions {
  /// Keys the store can hold; rounded up to a power of two (at most 2^20).
  std::size_t capacity = 1024;
  /// The domain the store lives in.
  DomainOptions domain{};
};

/// A read-only handle on one version of a stored value. Holds a counted
/// reference: the value's memory stays while any handle on it lives.
class StoreValue {
 public:
  StoreValue() = default;
  StoreValue(StoreValue&& other) noexcept;
  StoreValue& operator=(StoreValue&& other) noexcept;
  StoreValue(const StoreValue&) = delete;
  StoreValue& operator=(const StoreValue&) = delete;
  ~StoreValue();

  /// The value's bytes (for an array: metadata, then the elements when inline).
  [[nodiscard]] std::span<const std::byte> bytes() const noexcept { return {data_, size_}; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] MessageKind kind() const noexcept { return kind_; }
  /// The value's version: store-wide, increasing with every publish.
  [[nodiscard]] std::uint64_t version() const noexcept { return version_; }
  /// The array view of an array value, bounds-checked. Its elements are shared
  /// by every reader: they must not be written.
  [[nodiscard]] Result<ArrayView, ArrayError> array() const noexcept;
  /// Attachments of a value published from a loan (`Loan::attach`: an array's
  /// elements sent by reference, a serialized object's buffers); 0 otherwise.
  [[nodiscard]] std::size_t attachment_count() const noexcept;
  /// The bytes of attachment `index`, bounds-checked (Corrupt when it fails the
  /// checks or there is no such attachment). Read-only, like the value.
  [[nodiscard]] Result<std::span<const std::byte>, StoreGetError> attachment(std::size_t index) const;
  /// Heap offset of the value's record block (for bindings and tests).
  [[nodiscard]] std::uint64_t record_offset() const noexcept { return record_; }
  void reset() noexcept;
  [[nodiscard]] bool valid() const noexcept { return record_ != 0; }
  explicit operator bool() const noexcept { return valid(); }

 private:
  friend class Store;
  friend class Loan;  // Loan::attach(const StoreValue&, ...) takes a reference to the value's blocks
  /// The payload of attachment `index` of the value's block, or an empty span if it fails the checks.
  [[nodiscard]] std::span<std::byte> attached(std::size_t index) const noexcept;
  std::shared_ptr<detail::DomainState> domain_;
  std::uint64_t record_ = 0;       // heap offset of the record block (counted, listed)
  std::uint64_t value_block_ = 0;  // the attached value block, or 0 when the bytes are inline
  std::uint32_t holding_ = 0;
  std::uint32_t fork_epoch_ = 0;
  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
  std::uint64_t version_ = 0;
  MessageKind kind_ = MessageKind::Bytes;
};

/// A named store of immutable values.
class Store {
 public:
  /// Opens a store by name (see OpenMode).
  static Result<Store, OpenError> open(std::string_view name, OpenMode mode = OpenMode::CreateOrAttach,
                                       const StoreOptions& options = {});
  static Result<Store, OpenError> create(std::string_view name, const StoreOptions& options = {}) {
    return open(name, OpenMode::CreateExclusive, options);
  }
  static Result<Store, OpenError> attach(std::string_view name, const StoreOptions& options = {}) {
    return open(name, OpenMode::AttachOnly, options);
  }

  Store() = default;
  Store(Store&&) noexcept = default;
  Store& operator=(Store&&) noexcept = default;
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;
  ~Store();

  /// A loan of the store's domain to build a value in (then `put(key, std::move(loan))`),
  /// with room for `attachments` (see Loan::attach).
  Result<Loan, LoanError> loan(std::size_t size, MessageKind kind = MessageKind::Bytes, std::size_t attachments = 0);
  /// Publishes the loan's contents without a copy; the loan is consumed on success.
  /// With `replace = false`, fails with AlreadyExists when the key has a value.
  Result<std::uint64_t, StorePutError> put(std::string_view key, Loan&& value, bool replace = true);
  /// Publishes a copy of `bytes` as a value of `kind`. Returns the new version.
  Result<std::uint64_t, StorePutError> put(std::string_view key, std::span<const std::byte> bytes,
                                           MessageKind kind = MessageKind::Bytes, bool replace = true);
  /// The current value of `key`.
  [[nodiscard]] Result<StoreValue, StoreGetError> get(std::string_view key) const;
  /// The value of `key` once it has one: now, or when a process publishes it.
  /// Waits without a limit (until the handle is closed or the store unlinked).
  Result<StoreValue, StoreWaitError> wait(std::string_view key) const {
    return wait_for(key, std::chrono::nanoseconds::max());
  }
  /// As `wait`, for at most `timeout` (0: one lookup; nanoseconds::max(): no
  /// limit); Timeout when the key still has no value then.
  Result<StoreValue, StoreWaitError> wait_for(std::string_view key, std::chrono::nanoseconds timeout) const;
  /// Removes the key's value; handles on it keep it until released.
  Result<void, StoreEraseError> erase(std::string_view key);
  /// The keys that have a value now (a snapshot).
  [[nodiscard]] std::vector<std::string> keys() const;
  /// Entries in the store's table (keys it can hold).
  [[nodiscard]] std::size_t capacity() const noexcept;

  /// Removes the store's name; the values go back to the heap when the last
  /// handle on the store and on each value is gone. Any handle may unlink.
  Result<void, UnlinkError> unlink();
  /// This handle lets go of the store (values obtained stay valid).
  void close() noexcept;
  [[nodiscard]] const std::string& name() const noexcept;
  [[nodiscard]] bool valid() const noexcept { return state_ != nullptr; }

 private:
  explicit Store(std::shared_ptr<detail::StoreState> state) noexcept : state_(std::move(state)) {}
  std::shared_ptr<detail::StoreState> state_;
};

}  // namespace hakobu
