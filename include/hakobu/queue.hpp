// hakobu — Queue: a named, bounded, multi-producer multi-consumer FIFO between
// processes. Each message goes to exactly one receiver.
//
// Names are per domain; any process of the same user opens a queue by name.
// Messages of up to kMaxInlineBytes ride inline in the ring slot; larger ones
// are blocks of the domain's shared heap, handed over without a copy.
//
// Waiting is adaptive: a blocking call spins for `spin` and then sleeps on a
// futex; a waiter count lets the other side skip the wake-up system call when
// nobody sleeps. `close()` (this handle lets go) is separate from `unlink()`
// (the name goes away, only for the handle that created it).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "hakobu/array.hpp"
#include "hakobu/buffer.hpp"
#include "hakobu/domain.hpp"
#include "hakobu/error.hpp"

namespace hakobu {

namespace detail {
class QueueState;
}  // namespace detail

/// How `Queue::open` treats an existing name.
enum class OpenMode : std::uint8_t {
  CreateOrAttach,   ///< Attach if the name exists, else create.
  AttachOnly,       ///< Fail with NotFound if the name does not exist.
  CreateExclusive,  ///< Fail with AlreadyExists if the name exists.
};

/// Settings a queue is created with; attaching keeps the existing queue's
/// capacity and inline capacity (only `spin` applies to every handle).
struct QueueOptions {
  /// Number of messages the queue holds; rounded up to a power of two.
  std::size_t capacity = 1024;
  /// Largest message carried inline in a ring slot (at most kMaxInlineBytes).
  std::size_t inline_capacity = kMaxInlineBytes;
  /// How long a blocking call spins before it sleeps.
  std::chrono::nanoseconds spin{std::chrono::microseconds(20)};
  /// The domain the queue lives in.
  DomainOptions domain{};
};

/// Counters of a queue.
struct QueueStats {
  std::size_t size = 0;  ///< messages waiting
  std::size_t capacity = 0;
  std::size_t inline_capacity = 0;  ///< largest message carried inside a slot
  std::uint64_t put_count = 0;
  std::uint64_t get_count = 0;
  std::int32_t creator_pid = 0;
};

/// A handle on a named queue. Move-only; closing it does not remove the queue.
class Queue {
 public:
  using Clock = std::chrono::steady_clock;

  /// Opens `name` per `mode`.
  static Result<Queue, OpenError> open(std::string_view name, OpenMode mode = OpenMode::CreateOrAttach,
                                       const QueueOptions& options = {});
  /// Creates `name`; fails if it exists.
  static Result<Queue, OpenError> create(std::string_view name, const QueueOptions& options = {}) {
    return open(name, OpenMode::CreateExclusive, options);
  }
  /// Attaches to an existing `name`.
  static Result<Queue, OpenError> attach(std::string_view name, const QueueOptions& options = {}) {
    return open(name, OpenMode::AttachOnly, options);
  }
  /// Removes the name `name` from `domain` whoever created it (administration:
  /// `hakobu rm`). Processes attached keep working until they close.
  static Result<void, UnlinkError> remove(std::string_view name, std::string_view domain = {});

  Queue() = default;
  Queue(Queue&& other) noexcept;
  Queue& operator=(Queue&& other) noexcept;
  Queue(const Queue&) = delete;
  Queue& operator=(const Queue&) = delete;
  ~Queue();

  // --- sending -------------------------------------------------------------
  /// Sends a copy of `bytes` if there is room now.
  Result<void, PutError> try_put(std::span<const std::byte> bytes, MessageKind kind = MessageKind::Bytes);
  /// Sends a copy of `bytes`, waiting for room.
  Result<void, PutError> put(std::span<const std::byte> bytes, MessageKind kind = MessageKind::Bytes);
  /// Sends a copy of `bytes`, waiting at most `timeout` for room.
  Result<void, PutError> put(std::span<const std::byte> bytes, std::chrono::nanoseconds timeout,
                             MessageKind kind = MessageKind::Bytes);

  /// Sends a loan without a copy if there is room now. On failure the loan is
  /// left untouched in `loan`.
  Result<void, PutError> try_put(Loan& loan);
  /// Sends a loan without a copy, waiting for room; on failure `loan` is kept.
  Result<void, PutError> put(Loan& loan);
  /// Sends a loan without a copy, waiting at most `timeout`; on failure `loan` is kept.
  Result<void, PutError> put(Loan& loan, std::chrono::nanoseconds timeout);
  Result<void, PutError> put(Loan&& loan) { return put(loan); }

  /// Copies a contiguous array of `dtype` and `shape` from `data` and sends it.
  Result<void, PutError> put_array(const void* data, DType dtype, std::span<const std::int64_t> shape,
                                   std::chrono::nanoseconds timeout = std::chrono::nanoseconds::max());

  /// Lends `size` bytes of shared memory to build a message in place, with
  /// room for `attachments` references to other blocks (see Loan::attach).
  /// `copy_source`: the address the payload will be copied from, if the caller
  /// fills the loan with one copy; the block is laid out so that this copy (and
  /// the receiver's copy out into an ordinary buffer) runs at memcpy speed.
  /// Without it, payloads of 64 KiB and more are placed for the usual
  /// buffers (on a page, or 16 bytes past one). Payloads stay 64-byte aligned.
  Result<Loan, LoanError> loan(std::size_t size, MessageKind kind = MessageKind::Bytes, std::size_t attachments = 0,
                               const void* copy_source = nullptr);
  /// Lends an array message whose elements are not copied into it but live in
  /// another block, to be attached as attachment 0 before sending (a view of
  /// shared memory this process holds, sent without a copy). `strides` in
  /// bytes; `byte_offset` locates element [0,...,0] in that block's payload.
  Result<Loan, LoanError> loan_array_ref(DType dtype, std::span<const std::int64_t> shape,
                                         std::span<const std::int64_t> strides, std::int64_t byte_offset,
                                         std::string_view typestr = {});
  /// Lends an array of `dtype` and `shape` (contiguous in `order`); its
  /// metadata is written, its elements are left for the caller.
  /// `copy_source`: the address the elements will be copied from, if the caller
  /// fills them with one copy; the elements are placed so that this copy runs at
  /// memcpy speed (see `loan`).
  Result<Loan, LoanError> loan_array(DType dtype, std::span<const std::int64_t> shape, Order order = Order::C,
                                     std::string_view typestr = {}, const void* copy_source = nullptr);

  // --- receiving -----------------------------------------------------------
  /// Receives a message if one is waiting now.
  Result<Sample, GetError> try_get();
  /// Receives a message, waiting for one.
  Result<Sample, GetError> get();
  /// Receives a message, waiting at most `timeout`.
  Result<Sample, GetError> get(std::chrono::nanoseconds timeout);

  // --- state ---------------------------------------------------------------
  /// Messages waiting (a snapshot).
  [[nodiscard]] std::size_t size() const noexcept;
  [[nodiscard]] std::size_t capacity() const noexcept;
  [[nodiscard]] const std::string& name() const noexcept;
  [[nodiscard]] bool is_creator() const noexcept;
  [[nodiscard]] bool is_open() const noexcept { return state_ != nullptr; }
  [[nodiscard]] QueueStats stats() const noexcept;
  /// Sets how long blocking calls spin before sleeping.
  void set_spin(std::chrono::nanoseconds spin) noexcept;

  /// Lets go of the queue in this process; wakes this process's waiters with
  /// `Closed`. The queue and its messages stay.
  void close() noexcept;
  /// Removes the name (creator only) and wakes every waiter of every process
  /// with `Unlinked`; messages still queued are freed once the last process
  /// lets go. Also closes this handle.
  Result<void, UnlinkError> unlink();

  /// The domain this queue lives in.
  [[nodiscard]] Domain domain() const;

 private:
  Result<void, PutError> put_bytes(std::span<const std::byte> bytes, MessageKind kind,
                                   std::chrono::nanoseconds timeout);
  Result<void, PutError> put_loan(Loan& loan, std::chrono::nanoseconds timeout);
  Result<Sample, GetError> get_for(std::chrono::nanoseconds timeout);

  std::shared_ptr<detail::QueueState> state_;
};

}  // namespace hakobu
