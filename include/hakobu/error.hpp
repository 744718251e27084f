// hakobu — errors as values.
//
// Every fallible operation returns `Result<T, Code>`: either a value or an
// `Error<Code>`, where `Code` is the operation's own `enum class`. The enum is
// the contract (what can go wrong, what to do); the message is for people and
// carries the numbers (the name involved, how much was asked, how much is free).
// Exceptions are never thrown on the hot path.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>

namespace hakobu {

/// Why opening (creating or attaching) a named object failed.
enum class OpenError : std::uint8_t {
  InvalidName,       ///< Name empty, too long, or has characters outside [A-Za-z0-9._-].
  NotFound,          ///< Attach-only and no object has that name.
  AlreadyExists,     ///< Create-exclusive and the name is taken.
  PermissionDenied,  ///< The object belongs to another user or its mode forbids access.
  Incompatible,      ///< The existing object has another layout version or configuration.
  Corrupt,           ///< The object's header failed validation; remove it with `hakobu rm`.
  OutOfMemory,       ///< Shared memory (e.g. /dev/shm) is full; the message says how full.
  TooManyProcesses,  ///< The domain's process table is full.
  InvalidArgument,   ///< An option is out of range (the message says which).
  SystemError,       ///< Any other operating-system error (the message has errno text).
};

/// Why `put` (any form) failed. On every error the queue is left as it was.
enum class PutError : std::uint8_t {
  Full,         ///< `try_put` on a full queue.
  Timeout,      ///< The timed form waited the whole timeout and the queue stayed full.
  Closed,       ///< This handle was closed (possibly while waiting).
  Unlinked,     ///< The queue's name was removed by its creator.
  TooLarge,     ///< The message exceeds the domain's largest block.
  OutOfMemory,  ///< Shared memory is full; the message says how much was asked and is free.
  Invalid,      ///< The loan does not belong to this queue's domain or was already sent.
};

/// Why `get` (any form) failed.
enum class GetError : std::uint8_t {
  Empty,        ///< `try_get` on an empty queue.
  Timeout,      ///< The timed form waited the whole timeout and the queue stayed empty.
  Closed,       ///< This handle was closed (possibly while waiting).
  Unlinked,     ///< The queue's name was removed by its creator.
  Corrupt,      ///< A descriptor failed bounds checks; the message was dropped, the queue goes on.
  OutOfMemory,  ///< Shared memory is full: no room to record the message as held; nothing was taken.
  /// End of stream: the queue is empty and every handle that sent on it has
  /// closed (Queue::close), none of them failed. Lasts until a sender comes.
  Ended,
  /// The queue is empty and every handle that sent on it is gone, but one of
  /// them failed (Queue::close(Ending::Failed)) or its process died: the
  /// stream may be incomplete. Lasts until a sender comes.
  SendersLost,
};

/// Why `loan` failed.
enum class LoanError : std::uint8_t {
  TooLarge,         ///< Larger than the domain's largest block.
  OutOfMemory,      ///< Shared memory is full; the message says how much was asked and is free.
  Closed,           ///< The handle was closed.
  InvalidArgument,  ///< E.g. an array shape whose byte size overflows.
};

/// Why `unlink` failed.
enum class UnlinkError : std::uint8_t {
  NotCreator,        ///< Only the handle that created the name may unlink it (see `Queue::remove`).
  Closed,            ///< The handle was closed.
  NotFound,          ///< The name was already removed.
  InvalidName,       ///< The name (of the object or its domain) is not a valid name.
  PermissionDenied,  ///< The object or its domain belongs to another user (the message names the owner).
  SystemError,       ///< Any other operating-system error.
};

/// Why `Loan::attach` failed.
enum class AttachError : std::uint8_t {
  NoRoom,       ///< The loan was made with fewer attachment places.
  NotShared,    ///< The source is not a block of shared memory (an empty or inline message).
  OtherDomain,  ///< The source lives in another domain.
  Invalid,      ///< The loan was sent or released, or the attachment index is out of range.
};

/// Why reading an array message failed.
enum class ArrayError : std::uint8_t {
  NotAnArray,  ///< The message is raw bytes or an object.
  Corrupt,     ///< The array header failed bounds checks.
};

std::string_view to_string(OpenError code) noexcept;
std::string_view to_string(PutError code) noexcept;
std::string_view to_string(GetError code) noexcept;
std::string_view to_string(LoanError code) noexcept;
std::string_view to_string(UnlinkError code) noexcept;
std::string_view to_string(ArrayError code) noexcept;
std::string_view to_string(AttachError code) noexcept;

/// An error code with a human-readable message.
template <class Code>
struct Error {
  Code code;
  std::string message;

  friend bool operator==(const Error& error, Code other) noexcept { return error.code == other; }
};

/// Either a `T` or an `Error<Code>`; a small subset of C++23 `std::expected`.
/// Check before taking the value: `value()` on an error is a programming error
/// and throws std::bad_variant_access.
template <class T, class Code>
class [[nodiscard]] Result {
 public:
  using value_type = T;
  using error_type = Error<Code>;

  Result(T value) : storage_(std::in_place_index<0>, std::move(value)) {}  // NOLINT(google-explicit-constructor)
  Result(error_type error)
      : storage_(std::in_place_index<1>, std::move(error)) {}  // NOLINT(google-explicit-constructor)
  Result(Code code, std::string message = {})                  // NOLINT(google-explicit-constructor)
      : storage_(std::in_place_index<1>, error_type{code, std::move(message)}) {}

  [[nodiscard]] bool has_value() const noexcept { return storage_.index() == 0; }
  explicit operator bool() const noexcept { return has_value(); }

  [[nodiscard]] T& value() & { return std::get<0>(storage_); }
  [[nodiscard]] const T& value() const& { return std::get<0>(storage_); }
  [[nodiscard]] T&& value() && { return std::get<0>(std::move(storage_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  [[nodiscard]] const error_type& error() const& { return std::get<1>(storage_); }
  [[nodiscard]] error_type&& error() && { return std::get<1>(std::move(storage_)); }

 private:
  std::variant<T, error_type> storage_;
};

/// Specialization for operations that return nothing on success.
template <class Code>
class [[nodiscard]] Result<void, Code> {
 public:
  using value_type = void;
  using error_type = Error<Code>;

  Result() = default;
  Result(error_type error) : error_(std::move(error)), failed_(true) {}  // NOLINT(google-explicit-constructor)
  Result(Code code, std::string message = {})                            // NOLINT(google-explicit-constructor)
      : error_{code, std::move(message)}, failed_(true) {}

  [[nodiscard]] bool has_value() const noexcept { return !failed_; }
  explicit operator bool() const noexcept { return has_value(); }
  [[nodiscard]] const error_type& error() const& { return error_; }
  [[nodiscard]] error_type&& error() && { return std::move(error_); }

 private:
  error_type error_{};
  bool failed_ = false;
};

}  // namespace hakobu
