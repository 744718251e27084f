// hakobu — Queue: a named, bounded, multi-producer multi-consumer FIFO between
// processes. Each message goes to exactly one receiver.
//
// Names are per domain; any process of the same user opens a queue by name.
// Messages of up to kMaxInlineBytes ride inline in the ring slot; larger ones
// are blocks of the domain's shared heap, handed over without a copy.
//
// Waiting follows the handle's Latency mode (default: adaptive spinning, then a
// futex sleep); a waiter count lets the other side skip the wake-up system call
// when nobody sleeps. Event loops wait through a WakeSocket instead (watch()).
// `close()` (this handle lets go) is separate from `unlink()` (the name goes
// away, only for the handle that created it).
//
// End of stream: a handle becomes one of the queue's senders with its first
// put (or at open, with QueueOptions::sends). When the queue is empty and no
// sender is left (each closed, or its process died), receivers get
// GetError::Ended (all closed normally) or GetError::SendersLost (one failed
// or died) instead of waiting forever; a new sender starts a new stream.
//
// Byte capacity: besides `capacity` messages, a queue holds at most
// `capacity_bytes` of payload in messages too large for a slot (the ring
// bounds the others), counting the blocks a message holds by reference (its
// attachments, which the queue keeps alive); a put that would exceed it waits for
// room like a put on a full ring. A message is always let in when the queue
// holds none (a single message may be larger than the limit).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "hakobu/array.hpp"
#include "hakobu/domain.hpp"
#include "hakobu/error.hpp"
#include "hakobu/message.hpp"

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

/// How a blocking call waits for a message or for room.
enum class Latency : std::uint8_t {
  /// Spins while this handle's recent waits say an arrival is near, within a
  /// CPU budget (a quarter of a core while nothing arrives), then sleeps. Default.
  Adaptive,
  /// Spins until the deadline and never sleeps: lowest latency, a whole core.
  Spin,
  /// Never spins: sleeps at once (least CPU; each wake-up costs the OS's latency).
  Sleep,
  /// Spins for QueueOptions::spin (or set_spin()), then sleeps.
  Fixed,
};

/// QueueOptions::capacity_bytes: half the size of the file system that holds
/// the domain's shared memory, read when the queue is created.
inline constexpr std::size_t kAutoCapacityBytes = std::numeric_limits<std::size_t>::max();

/// How a sending handle ends its part of the stream (Queue::close).
enum class Ending : std::uint8_t {
  Finished,  ///< Everything it meant to send was sent.
  Failed,    ///< It stopped early: receivers get SendersLost once the queue is drained.
};

/// Settings a queue is created with; attaching keeps the existing queue's
/// capacity, byte capacity and inline capacity (`latency`, `spin` and `sends`
/// apply to every handle).
struct QueueOptions {
  /// Number of messages the queue holds; rounded up to a power of two.
  std::size_t capacity = 1024;
  /// Payload bytes of messages too large for a slot that the queue holds, their
  /// attachments' included (0: no limit; kAutoCapacityBytes: half of the
  /// shared-memory file system). A put waits while the queue is at the limit.
  std::size_t capacity_bytes = kAutoCapacityBytes;
  /// Count this handle as a sender from the start (else from its first put),
  /// so that receivers do not see the end of the stream before it sends.
  bool sends = false;
  /// Largest message carried inline in a ring slot (at most kMaxInlineBytes).
  std::size_t inline_capacity = kMaxInlineBytes;
  /// How blocking calls of this handle wait.
  Latency latency = Latency::Adaptive;
  /// With Latency::Fixed: how long a blocking call spins before it sleeps.
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
  std::uint64_t bytes = 0;              ///< payload bytes waiting (a snapshot)
  std::uint64_t capacity_bytes = 0;     ///< 0: no limit
  std::uint32_t senders = 0;            ///< handles counted as senders now (live or not yet found dead)
  bool ended = false;                   ///< empty, with senders once and none left (the next get ends)
  bool senders_lost = false;            ///< one of this stream's senders failed or died
  std::uint32_t receivers_waiting = 0;  ///< threads asleep in a get, and event loops watching for a message
  std::uint32_t senders_waiting = 0;    ///< threads asleep in a put, and event loops watching for room
};

/// Why `WakeSocket::open` or `Queue::watch` failed.
enum class WatchError : std::uint8_t {
  Closed,       ///< The queue handle (or the socket) is closed.
  Full,         ///< kMaxWatchers processes' sockets watch this side already: poll instead.
  SystemError,  ///< The socket could not be made (the message has errno text).
};

/// Which change an event loop waits for on a queue.
enum class Readiness : std::uint8_t {
  Readable,  ///< a message may have arrived (signalled by puts)
  Writable,  ///< room may have been freed (signalled by gets)
};

/// A descriptor an event loop watches (epoll, asyncio's add_reader): it becomes
/// readable when a queue this socket watches (Queue::watch) may be ready. It is
/// a datagram socket in the abstract namespace, so other processes can signal
/// it and it vanishes with this process. Wake-ups may be spurious: try the
/// queue again, then wait again. Move-only.
class WakeSocket {
 public:
  static Result<WakeSocket, WatchError> open();
  WakeSocket() = default;
  WakeSocket(WakeSocket&& other) noexcept;
  WakeSocket& operator=(WakeSocket&& other) noexcept;
  WakeSocket(const WakeSocket&) = delete;
  WakeSocket& operator=(const WakeSocket&) = delete;
  ~WakeSocket();

  /// The descriptor to watch for reading; -1 when closed.
  [[nodiscard]] int fd() const noexcept { return fd_; }
  /// The socket's 48-bit random id (its name is derived from it).
  [[nodiscard]] std::uint64_t id() const noexcept { return id_; }
  /// Reads the pending wake-ups without waiting, storing the cookie of each
  /// (the one given to Queue::watch) into `out`; returns how many were stored.
  /// Call again while it fills `out`. Datagrams not meant for this socket are dropped.
  std::size_t drain(std::span<std::uint16_t> out) noexcept;
  void close() noexcept;

 private:
  int fd_ = -1;
  std::uint64_t id_ = 0;
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
  /// The same, waiting in the given latency mode (this call only).
  Result<void, PutError> put(std::span<const std::byte> bytes, std::chrono::nanoseconds timeout, MessageKind kind,
                             Latency latency);
  Result<void, PutError> put(Loan& loan, std::chrono::nanoseconds timeout, Latency latency);

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
  /// Receives a message, waiting at most `timeout` in the given latency mode (this call only).
  Result<Sample, GetError> get(std::chrono::nanoseconds timeout, Latency latency);

  // --- event loops -------------------------------------------------------------
  /// At most this many sockets watch one side of a queue at a time.
  static constexpr std::size_t kMaxWatchers = 16;
  /// Asks every process's puts (Readable) or gets (Writable) on this queue, and
  /// its closing or unlinking, to signal `socket` with `cookie`, until unwatch().
  /// Register, then try the queue once more, then wait on the socket: a message
  /// published before the registration is seen by that try.
  Result<void, WatchError> watch(const WakeSocket& socket, Readiness readiness, std::uint16_t cookie);
  /// Spins as this handle's blocking call would before it sleeps (at most
  /// `at_most`), until the queue looks ready: a message at its head
  /// (Readable) or a free slot (Writable). Never sleeps and takes nothing;
  /// true if it looks ready (a try may still lose the race). For event loops,
  /// before they hand the wait to a WakeSocket.
  bool spin_until_ready(Readiness readiness, std::chrono::nanoseconds at_most) noexcept;
  /// Ends watch(); puts and gets stop signalling `socket` for this cookie.
  void unwatch(const WakeSocket& socket, Readiness readiness, std::uint16_t cookie) noexcept;

  // --- state ---------------------------------------------------------------
  /// Messages waiting (a snapshot).
  [[nodiscard]] std::size_t size() const noexcept;
  [[nodiscard]] std::size_t capacity() const noexcept;
  /// Payload bytes the queue holds at most (0: no limit).
  [[nodiscard]] std::size_t capacity_bytes() const noexcept;
  [[nodiscard]] const std::string& name() const noexcept;
  [[nodiscard]] bool is_creator() const noexcept;
  [[nodiscard]] bool is_open() const noexcept { return state_ != nullptr; }
  [[nodiscard]] QueueStats stats() const noexcept;
  /// Sets how long blocking calls spin before sleeping: 0 is Latency::Sleep,
  /// anything else Latency::Fixed with that spin.
  void set_spin(std::chrono::nanoseconds spin) noexcept;
  /// Sets how blocking calls of this handle wait.
  void set_latency(Latency latency) noexcept;
  [[nodiscard]] Latency latency() const noexcept;
  /// The spin (ns) the handle's mode would use for its next blocking get (0:
  /// none; INT64_MAX: until the deadline). A snapshot, for tests and tools.
  [[nodiscard]] std::int64_t planned_spin_ns() const noexcept;

  /// Lets go of the queue in this process; wakes this process's waiters with
  /// `Closed`. The queue and its messages stay. If this handle was a sender,
  /// its part of the stream ends as `ending` says; when it was the last
  /// sender, receivers get Ended (or SendersLost) once the queue is empty.
  void close(Ending ending = Ending::Finished) noexcept;
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
