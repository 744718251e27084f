// hakobu._core — how C++ errors become Python exceptions.
//
// Kinds. Bindings throw `PythonError{kind, message}`, where `kind` is an
// `ErrorKind`: one enumerator per exception class of hakobu/_errors.py that
// the core can raise. Each core error code has its kind in `kind_of` below, a
// `switch` without `default` per error enum; the extension is compiled with
// -Werror=switch (CMakeLists.txt), so a new enumerator in include/hakobu/
// error.hpp (or queue.hpp) without a kind here, or a new ErrorKind without a
// class name in `class_name`, fails the build instead of raising the wrong class.
//
// Classes, bound once. The classes are Python objects defined in
// hakobu/_errors.py, which the extension does not import. Instead
// hakobu/_errors.py, right after defining them, hands its module to
// `_core.bind_errors` (module.cpp): every kind's class is looked up there once,
// checked to be a class under HakobuError, and kept for the life of the
// process; the translator then only indexes that table. A missing or wrong
// class makes `bind_errors` raise ImportError, so `import hakobu` itself fails,
// naming the class, before any error can be raised.
//
// Import order (why the classes come to the extension, not the other way):
// hakobu/__init__.py imports _checks (which imports _errors, which imports
// _core and binds) and then _core. The extension imports no hakobu module, so
// there is no cycle whatever the order, and `hakobu._core` can be imported
// alone (the stub generator does so from a build-tree package with an empty
// __init__.py, CMakeLists.txt). An error raised by an extension whose classes
// were never bound (only that case) is a RuntimeError that says so.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>

#include "hakobu/domain.hpp"
#include "hakobu/error.hpp"
#include "hakobu/queue.hpp"
#include "hakobu/store.hpp"
#include "hakobu/sync.hpp"
#include "hakobu/topic.hpp"

namespace hakobu::python {

/// The Python exception classes the core raises (hakobu/_errors.py); the
/// enumerator names are the class names.
enum class ErrorKind : std::uint8_t {
  HakobuError,  ///< The base class: only for a code outside its enum (never expected).
  Empty,
  Full,
  Closed,
  Unlinked,
  NotFound,
  AlreadyExists,
  InvalidName,
  InvalidArgument,
  AccessDenied,
  NotCreator,
  Incompatible,
  Corrupt,
  OutOfSharedMemory,
  TooLarge,
  TooManyProcesses,
  NotHeld,
  ForkedHandle,
  SystemFailure,
  KeyNotFound,
  Busy,
  TooManyReleases,
  BrokenBarrierError,
  TooManySubscribers,
  EndOfStream,
  SendersLost,
};
inline constexpr std::size_t kErrorKindCount = static_cast<std::size_t>(ErrorKind::SendersLost) + 1;

/// The name of kind's class in hakobu._errors (nullptr only for a value outside the enum).
constexpr const char* class_name(ErrorKind kind) noexcept {
  switch (kind) {
    case ErrorKind::HakobuError: return "HakobuError";
    case ErrorKind::Empty: return "Empty";
    case ErrorKind::Full: return "Full";
    case ErrorKind::Closed: return "Closed";
    case ErrorKind::Unlinked: return "Unlinked";
    case ErrorKind::NotFound: return "NotFound";
    case ErrorKind::AlreadyExists: return "AlreadyExists";
    case ErrorKind::InvalidName: return "InvalidName";
    case ErrorKind::InvalidArgument: return "InvalidArgument";
    case ErrorKind::AccessDenied: return "AccessDenied";
    case ErrorKind::NotCreator: return "NotCreator";
    case ErrorKind::Incompatible: return "Incompatible";
    case ErrorKind::Corrupt: return "Corrupt";
    case ErrorKind::OutOfSharedMemory: return "OutOfSharedMemory";
    case ErrorKind::TooLarge: return "TooLarge";
    case ErrorKind::TooManyProcesses: return "TooManyProcesses";
    case ErrorKind::NotHeld: return "NotHeld";
    case ErrorKind::ForkedHandle: return "ForkedHandle";
    case ErrorKind::SystemFailure: return "SystemFailure";
    case ErrorKind::KeyNotFound: return "KeyNotFound";
    case ErrorKind::Busy: return "Busy";
    case ErrorKind::TooManyReleases: return "TooManyReleases";
    case ErrorKind::BrokenBarrierError: return "BrokenBarrierError";
    case ErrorKind::TooManySubscribers: return "TooManySubscribers";
    case ErrorKind::EndOfStream: return "EndOfStream";
    case ErrorKind::SendersLost: return "SendersLost";
  }
  return nullptr;
}

constexpr bool every_kind_named() noexcept {
  for (std::size_t i = 0; i < kErrorKindCount; ++i) {
    if (class_name(static_cast<ErrorKind>(i)) == nullptr) return false;
  }
  return true;
}
static_assert(every_kind_named(), "every ErrorKind needs its class name in class_name()");

// The kind of each error code; nullopt only for a value outside the enum.
// No `default:` on purpose (see the comment at the top).

constexpr std::optional<ErrorKind> kind_of(OpenError code) noexcept {
  switch (code) {
    case OpenError::InvalidName: return ErrorKind::InvalidName;
    case OpenError::NotFound: return ErrorKind::NotFound;
    case OpenError::AlreadyExists: return ErrorKind::AlreadyExists;
    case OpenError::PermissionDenied: return ErrorKind::AccessDenied;
    case OpenError::Incompatible: return ErrorKind::Incompatible;
    case OpenError::Corrupt: return ErrorKind::Corrupt;
    case OpenError::OutOfMemory: return ErrorKind::OutOfSharedMemory;
    case OpenError::TooManyProcesses: return ErrorKind::TooManyProcesses;
    case OpenError::InvalidArgument: return ErrorKind::InvalidArgument;
    case OpenError::SystemError: return ErrorKind::SystemFailure;
  }
  return std::nullopt;
}

constexpr std::optional<ErrorKind> kind_of(PutError code) noexcept {
  switch (code) {
    case PutError::Full: return ErrorKind::Full;
    case PutError::Timeout: return ErrorKind::Full;  // as queue.Queue.put: Full after a timeout too
    case PutError::Closed: return ErrorKind::Closed;
    case PutError::Unlinked: return ErrorKind::Unlinked;
    case PutError::TooLarge: return ErrorKind::TooLarge;
    case PutError::OutOfMemory: return ErrorKind::OutOfSharedMemory;
    case PutError::Invalid: return ErrorKind::InvalidArgument;
  }
  return std::nullopt;
}

constexpr std::optional<ErrorKind> kind_of(GetError code) noexcept {
  switch (code) {
    case GetError::Empty: return ErrorKind::Empty;
    case GetError::Timeout: return ErrorKind::Empty;  // as queue.Queue.get: Empty after a timeout too
    case GetError::Closed: return ErrorKind::Closed;
    case GetError::Unlinked: return ErrorKind::Unlinked;
    case GetError::Corrupt: return ErrorKind::Corrupt;
    case GetError::OutOfMemory: return ErrorKind::OutOfSharedMemory;
    case GetError::Ended: return ErrorKind::EndOfStream;
    case GetError::SendersLost: return ErrorKind::SendersLost;
  }
  return std::nullopt;
}

constexpr std::optional<ErrorKind> kind_of(LoanError code) noexcept {
  switch (code) {
    case LoanError::TooLarge: return ErrorKind::TooLarge;
    case LoanError::OutOfMemory: return ErrorKind::OutOfSharedMemory;
    case LoanError::Closed: return ErrorKind::Closed;
    case LoanError::InvalidArgument: return ErrorKind::InvalidArgument;
  }
  return std::nullopt;
}

constexpr std::optional<ErrorKind> kind_of(UnlinkError code) noexcept {
  switch (code) {
    case UnlinkError::NotCreator: return ErrorKind::NotCreator;
    case UnlinkError::Closed: return ErrorKind::Closed;
    case UnlinkError::NotFound: return ErrorKind::NotFound;
    case UnlinkError::InvalidName: return ErrorKind::InvalidName;
    case UnlinkError::PermissionDenied: return ErrorKind::AccessDenied;
    case UnlinkError::SystemError: return ErrorKind::SystemFailure;
  }
  return std::nullopt;
}

constexpr std::optional<ErrorKind> kind_of(ArrayError code) noexcept {
  switch (code) {
    case ArrayError::NotAnArray: return ErrorKind::InvalidArgument;
    case ArrayError::Corrupt: return ErrorKind::Corrupt;
  }
  return std::nullopt;
}

// Loan.attach returns False for NotShared and OtherDomain (the caller copies
// instead), so only NoRoom and Invalid are raised; the others would be wrong
// arguments too.
constexpr std::optional<ErrorKind> kind_of(AttachError code) noexcept {
  switch (code) {
    case AttachError::NoRoom: return ErrorKind::InvalidArgument;
    case AttachError::NotShared: return ErrorKind::InvalidArgument;
    case AttachError::OtherDomain: return ErrorKind::InvalidArgument;
    case AttachError::Invalid: return ErrorKind::InvalidArgument;
  }
  return std::nullopt;
}

// Queue.watch returns False for Full (the caller polls instead), so only
// Closed and SystemError are raised; a full table is no argument error.
constexpr std::optional<ErrorKind> kind_of(WatchError code) noexcept {
  switch (code) {
    case WatchError::Closed: return ErrorKind::Closed;
    case WatchError::Full: return ErrorKind::SystemFailure;
    case WatchError::SystemError: return ErrorKind::SystemFailure;
  }
  return std::nullopt;
}

// Stores: a missing key is a KeyError (KeyNotFound), as a mapping's must be;
// so is a wait whose timeout ran out (as a queue's get raises Empty after a
// timeout too); a bad key is a wrong argument.

constexpr std::optional<ErrorKind> kind_of(StorePutError code) noexcept {
  switch (code) {
    case StorePutError::InvalidKey: return ErrorKind::InvalidArgument;
    case StorePutError::AlreadyExists: return ErrorKind::AlreadyExists;
    case StorePutError::Full: return ErrorKind::Full;
    case StorePutError::TooLarge: return ErrorKind::TooLarge;
    case StorePutError::OutOfMemory: return ErrorKind::OutOfSharedMemory;
    case StorePutError::Invalid: return ErrorKind::InvalidArgument;
    case StorePutError::Busy: return ErrorKind::Busy;
    case StorePutError::Closed: return ErrorKind::Closed;
  }
  return std::nullopt;
}

constexpr std::optional<ErrorKind> kind_of(StoreGetError code) noexcept {
  switch (code) {
    case StoreGetError::InvalidKey: return ErrorKind::InvalidArgument;
    case StoreGetError::NotFound: return ErrorKind::KeyNotFound;
    case StoreGetError::Corrupt: return ErrorKind::Corrupt;
    case StoreGetError::OutOfMemory: return ErrorKind::OutOfSharedMemory;
    case StoreGetError::Busy: return ErrorKind::Busy;
    case StoreGetError::Closed: return ErrorKind::Closed;
  }
  return std::nullopt;
}

constexpr std::optional<ErrorKind> kind_of(StoreEraseError code) noexcept {
  switch (code) {
    case StoreEraseError::InvalidKey: return ErrorKind::InvalidArgument;
    case StoreEraseError::NotFound: return ErrorKind::KeyNotFound;
    case StoreEraseError::Closed: return ErrorKind::Closed;
  }
  return std::nullopt;
}

constexpr std::optional<ErrorKind> kind_of(StoreWaitError code) noexcept {
  switch (code) {
    case StoreWaitError::InvalidKey: return ErrorKind::InvalidArgument;
    case StoreWaitError::Timeout: return ErrorKind::KeyNotFound;
    case StoreWaitError::Corrupt: return ErrorKind::Corrupt;
    case StoreWaitError::OutOfMemory: return ErrorKind::OutOfSharedMemory;
    case StoreWaitError::Busy: return ErrorKind::Busy;
    case StoreWaitError::Closed: return ErrorKind::Closed;
  }
  return std::nullopt;
}

// Lock.acquire returns False for WouldBlock and Timeout (as threading.Lock
// does), so only Forked and TooDeep are raised; the others say the lock is not held.
constexpr std::optional<ErrorKind> kind_of(AcquireError code) noexcept {
  switch (code) {
    case AcquireError::WouldBlock: return ErrorKind::NotHeld;
    case AcquireError::Timeout: return ErrorKind::NotHeld;
    case AcquireError::Forked: return ErrorKind::ForkedHandle;
    case AcquireError::TooDeep: return ErrorKind::InvalidArgument;
  }
  return std::nullopt;
}

constexpr std::optional<ErrorKind> kind_of(ReleaseError code) noexcept {
  switch (code) {
    case ReleaseError::NotHeld: return ErrorKind::NotHeld;
    case ReleaseError::NotOwner: return ErrorKind::NotHeld;
    case ReleaseError::NotOwnerThread: return ErrorKind::NotHeld;
    case ReleaseError::Forked: return ErrorKind::ForkedHandle;
  }
  return std::nullopt;
}

// A bounded semaphore's over-release is a ValueError, as threading's
// (TooManyReleases derives from it); a bad count is a wrong argument.
constexpr std::optional<ErrorKind> kind_of(SemaphoreReleaseError code) noexcept {
  switch (code) {
    case SemaphoreReleaseError::InvalidArgument: return ErrorKind::InvalidArgument;
    case SemaphoreReleaseError::TooMany: return ErrorKind::TooManyReleases;
    case SemaphoreReleaseError::Forked: return ErrorKind::ForkedHandle;
  }
  return std::nullopt;
}

// As threading.Barrier.wait, a timed-out wait raises BrokenBarrierError too
// (it broke the barrier for everyone).
constexpr std::optional<ErrorKind> kind_of(BarrierError code) noexcept {
  switch (code) {
    case BarrierError::Broken: return ErrorKind::BrokenBarrierError;
    case BarrierError::Timeout: return ErrorKind::BrokenBarrierError;
    case BarrierError::Forked: return ErrorKind::ForkedHandle;
  }
  return std::nullopt;
}

// Condition.wait never raises LockTimeout: it takes the lock back without a
// deadline (sync.cpp); were it raised, the lock is not held (NotHeld).
constexpr std::optional<ErrorKind> kind_of(ConditionError code) noexcept {
  switch (code) {
    case ConditionError::NotHeld: return ErrorKind::NotHeld;
    case ConditionError::LockTimeout: return ErrorKind::NotHeld;
    case ConditionError::Forked: return ErrorKind::ForkedHandle;
  }
  return std::nullopt;
}

// The front checks dtypes and indexes before the atomics: these are wrong arguments.
constexpr std::optional<ErrorKind> kind_of(ValueError code) noexcept {
  switch (code) {
    case ValueError::TypeMismatch: return ErrorKind::InvalidArgument;
    case ValueError::OutOfRange: return ErrorKind::InvalidArgument;
  }
  return std::nullopt;
}

// Topic.subscribe: a topic at its max_subscribers has its own class (a
// resource limit, not a wrong argument: it passes when others unsubscribe).
constexpr std::optional<ErrorKind> kind_of(SubscribeError code) noexcept {
  switch (code) {
    case SubscribeError::Closed: return ErrorKind::Closed;
    case SubscribeError::Unlinked: return ErrorKind::Unlinked;
    case SubscribeError::TooManySubscribers: return ErrorKind::TooManySubscribers;
    case SubscribeError::InvalidArgument: return ErrorKind::InvalidArgument;
  }
  return std::nullopt;
}

/// What bindings throw; module.cpp's translator raises the class bound for `kind`.
struct PythonError : std::runtime_error {
  PythonError(ErrorKind error_kind, const std::string& message) : std::runtime_error(message), kind(error_kind) {}
  ErrorKind kind;
};

/// Attaches to domain `name` (empty: the default) without holding the GIL;
/// raises the matching Python exception on failure. `collect_on_attach`: see
/// DomainOptions (tools that report dead processes turn it off).
Domain open_domain(const std::string& name, bool collect_on_attach = true);

template <class Code>
[[noreturn]] void raise(const Error<Code>& error) {
  throw PythonError(kind_of(error.code).value_or(ErrorKind::HakobuError), error.message);
}

}  // namespace hakobu::python
