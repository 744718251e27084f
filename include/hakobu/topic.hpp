// hakobu — Topic: a named publish/subscribe channel between processes. Every
// subscriber receives every message published after it subscribed, in
// publication order, as a read-only view of one shared block.
//
// A topic is a ring of `capacity` messages in a domain, like a queue's. A
// message is published once; each subscription keeps its own cursor in the
// topic's file and reads the message where it lies, so fan-out to N
// subscribers costs the publisher one message and one wake-up call, whatever N.
// The topic keeps the last `history` messages for subscribers that join later.
// A message's block returns to the heap once every subscriber has passed it,
// it has left the history, and every receiver has released its view.
//
// A subscriber that falls `capacity` messages behind either holds publishers
// back (OnFull::Block) or is skipped ahead and counts what it missed
// (OnFull::DropOldest, the default: one slow subscriber never stalls the
// others). A subscriber whose process dies stops holding anything back; a
// publisher killed mid-publish leaves no torn message (the others skip it).
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
class TopicState;
class Subscription;
}  // namespace detail

/// What a subscriber that falls a whole ring behind does to publishers.
enum class OnFull : std::uint8_t {
  /// Publishers overwrite the oldest messages it has not read: it skips ahead
  /// and counts them (`Subscriber::dropped`, `TopicMessage::missed`). Default.
  DropOldest,
  /// Publishers wait for it (each up to its timeout): it misses nothing.
  Block,
};

/// Largest ring of a topic, in messages.
inline constexpr std::size_t kMaxTopicCapacity = std::size_t{1} << 20;
/// Most subscriptions a topic can have at once.
inline constexpr std::size_t kMaxTopicSubscribers = 1024;

/// Settings a topic is created with; attaching keeps the existing topic's
/// (`latency` and `spin` apply to every handle).
struct TopicOptions {
  /// Messages the ring holds (rounded up to a power of two): how far a
  /// subscriber may fall behind before its OnFull applies. At least history + 1.
  std::size_t capacity = 256;
  /// Last messages kept for subscribers that join later (at most capacity - 1).
  std::size_t history = 0;
  /// Most subscriptions at once (at most kMaxTopicSubscribers).
  std::size_t max_subscribers = 64;
  /// Largest message carried inline in a ring slot (at most kMaxInlineBytes).
  std::size_t inline_capacity = kMaxInlineBytes;
  /// How blocking calls of this handle and its subscribers wait.
  Latency latency = Latency::Adaptive;
  /// With Latency::Fixed: how long a blocking call spins before it sleeps.
  std::chrono::nanoseconds spin{std::chrono::microseconds(20)};
  /// The domain the topic lives in.
  DomainOptions domain{};
};

/// How one subscription receives.
struct SubscribeOptions {
  OnFull on_full = OnFull::DropOldest;
  /// How many of the messages the topic kept (its history) to receive first;
  /// more than it kept means all of them. 0: only what is published from now on.
  std::size_t history = 0;
};

/// Why `Topic::subscribe` failed.
enum class SubscribeError : std::uint8_t {
  Closed,              ///< This handle was closed.
  Unlinked,            ///< The topic's name was removed by its creator.
  TooManySubscribers,  ///< The topic has max_subscribers subscriptions already.
  InvalidArgument,     ///< An option is out of range (the message says which).
};

std::string_view to_string(SubscribeError code) noexcept;

/// Counters of a topic.
struct TopicStats {
  std::size_t capacity = 0;
  std::size_t history = 0;
  std::size_t max_subscribers = 0;
  std::size_t inline_capacity = 0;
  std::size_t subscribers = 0;  ///< subscriptions now
  std::uint64_t published = 0;  ///< messages published over the topic's life
  std::int32_t creator_pid = 0;
};

/// A received topic message: a read-only view of the block every subscriber
/// shares (or, for a small message, a private copy). Valid until released
/// (destroyed or `reset()`).
class TopicMessage {
 public:
  TopicMessage() = default;
  [[nodiscard]] std::span<const std::byte> bytes() const noexcept { return sample_.bytes(); }
  [[nodiscard]] std::size_t size() const noexcept { return sample_.size(); }
  [[nodiscard]] MessageKind kind() const noexcept { return sample_.kind(); }
  /// The array view of an array message, bounds-checked. Its elements are
  /// shared with every subscriber: read them, never write them.
  [[nodiscard]] Result<ArrayView, ArrayError> array() const noexcept;
  [[nodiscard]] std::size_t attachment_count() const noexcept { return sample_.attachment_count(); }
  /// The bytes of attachment `index`, bounds-checked (read-only, shared).
  [[nodiscard]] Result<std::span<const std::byte>, GetError> attachment(std::size_t index) const;
  /// The message's position in the topic (it counts every message published).
  [[nodiscard]] std::uint64_t sequence() const noexcept { return sequence_; }
  /// Messages this subscriber missed just before this one (OnFull::DropOldest).
  [[nodiscard]] std::uint64_t missed() const noexcept { return missed_; }
  /// The underlying sample, for language bindings (its bytes are shared: read-only).
  [[nodiscard]] const Sample& sample() const noexcept { return sample_; }
  /// Gives the sample to a binding that keeps it (the message is then empty).
  [[nodiscard]] Sample take_sample() noexcept { return std::move(sample_); }
  void reset() noexcept { sample_.reset(); }
  [[nodiscard]] bool valid() const noexcept { return sample_.valid(); }
  explicit operator bool() const noexcept { return valid(); }

 private:
  friend class detail::Subscription;
  Sample sample_;
  std::uint64_t sequence_ = 0;
  std::uint64_t missed_ = 0;
};

/// One subscription to a topic: its own cursor. Move-only; closing it (or its
/// destructor) ends the subscription. Threads may share one subscriber: each
/// message then goes to one of them.
class Subscriber {
 public:
  Subscriber() = default;
  Subscriber(Subscriber&& other) noexcept;
  Subscriber& operator=(Subscriber&& other) noexcept;
  Subscriber(const Subscriber&) = delete;
  Subscriber& operator=(const Subscriber&) = delete;
  ~Subscriber();

  /// Receives the next message if it was published already.
  Result<TopicMessage, GetError> try_get();
  /// Receives the next message, waiting for it.
  Result<TopicMessage, GetError> get();
  /// Receives the next message, waiting at most `timeout`.
  Result<TopicMessage, GetError> get(std::chrono::nanoseconds timeout);
  /// The same, waiting in the given latency mode (this call only).
  Result<TopicMessage, GetError> get(std::chrono::nanoseconds timeout, Latency latency);

  /// Asks every publish to this topic (and its unlinking) to signal `socket`
  /// with `cookie` until unwatch(); register, then try_get once more, then wait.
  Result<void, WatchError> watch(const WakeSocket& socket, std::uint16_t cookie);
  void unwatch(const WakeSocket& socket, std::uint16_t cookie) noexcept;
  /// Spins as a blocking get would before it sleeps (at most `at_most`) until
  /// the next message looks published. Takes nothing; never sleeps.
  bool spin_until_ready(std::chrono::nanoseconds at_most) noexcept;

  /// Messages skipped because publishers overwrote them (OnFull::DropOldest).
  [[nodiscard]] std::uint64_t dropped() const noexcept;
  /// Messages published and not yet received (a snapshot).
  [[nodiscard]] std::size_t lag() const noexcept;
  /// Messages received.
  [[nodiscard]] std::uint64_t received() const noexcept;
  [[nodiscard]] OnFull on_full() const noexcept;
  /// Sets how this subscriber's blocking gets wait (it starts with its topic handle's mode).
  void set_latency(Latency latency) noexcept;
  /// False once closed (or moved from, or inherited across fork()).
  [[nodiscard]] bool is_open() const noexcept;
  /// Ends the subscription (waking this subscriber's waiters with Closed);
  /// messages not yet received are no longer held for it.
  void close() noexcept;

 private:
  friend class Topic;
  std::shared_ptr<detail::Subscription> state_;
};

/// A handle on a named topic. Move-only; closing it does not remove the topic.
class Topic {
 public:
  /// Opens `name` per `mode`.
  static Result<Topic, OpenError> open(std::string_view name, OpenMode mode = OpenMode::CreateOrAttach,
                                       const TopicOptions& options = {});
  static Result<Topic, OpenError> create(std::string_view name, const TopicOptions& options = {}) {
    return open(name, OpenMode::CreateExclusive, options);
  }
  static Result<Topic, OpenError> attach(std::string_view name, const TopicOptions& options = {}) {
    return open(name, OpenMode::AttachOnly, options);
  }
  /// Removes the name `name` from `domain` whoever created it (`hakobu rm`).
  static Result<void, UnlinkError> remove(std::string_view name, std::string_view domain = {});

  Topic() = default;
  Topic(Topic&& other) noexcept;
  Topic& operator=(Topic&& other) noexcept;
  Topic(const Topic&) = delete;
  Topic& operator=(const Topic&) = delete;
  ~Topic();

  // --- publishing ------------------------------------------------------------
  /// Publishes a copy of `bytes`, waiting for subscribers with OnFull::Block
  /// to make room.
  Result<void, PutError> publish(std::span<const std::byte> bytes, MessageKind kind = MessageKind::Bytes);
  /// The same, waiting at most `timeout` (0: not at all, Full).
  Result<void, PutError> publish(std::span<const std::byte> bytes, std::chrono::nanoseconds timeout,
                                 MessageKind kind = MessageKind::Bytes);
  /// Publishes a loan without a copy; on failure `loan` is kept.
  Result<void, PutError> publish(Loan& loan, std::chrono::nanoseconds timeout = std::chrono::nanoseconds::max());
  Result<void, PutError> publish(Loan&& loan, std::chrono::nanoseconds timeout = std::chrono::nanoseconds::max()) {
    return publish(loan, timeout);
  }
  /// The same, waiting in the given latency mode (this call only).
  Result<void, PutError> publish(std::span<const std::byte> bytes, std::chrono::nanoseconds timeout, MessageKind kind,
                                 Latency latency);
  Result<void, PutError> publish(Loan& loan, std::chrono::nanoseconds timeout, Latency latency);
  /// Copies a contiguous array of `dtype` and `shape` from `data` and publishes it.
  Result<void, PutError> publish_array(const void* data, DType dtype, std::span<const std::int64_t> shape,
                                       std::chrono::nanoseconds timeout = std::chrono::nanoseconds::max());
  /// Loans, as Queue::loan, loan_array and loan_array_ref.
  Result<Loan, LoanError> loan(std::size_t size, MessageKind kind = MessageKind::Bytes, std::size_t attachments = 0,
                               const void* copy_source = nullptr);
  Result<Loan, LoanError> loan_array(DType dtype, std::span<const std::int64_t> shape, Order order = Order::C,
                                     std::string_view typestr = {}, const void* copy_source = nullptr);
  Result<Loan, LoanError> loan_array_ref(DType dtype, std::span<const std::int64_t> shape,
                                         std::span<const std::int64_t> strides, std::int64_t byte_offset,
                                         std::string_view typestr = {});

  // --- subscribing -----------------------------------------------------------
  /// A new subscription: it receives every message published from now on
  /// (after up to `options.history` kept ones).
  Result<Subscriber, SubscribeError> subscribe(const SubscribeOptions& options = {});

  // --- state -----------------------------------------------------------------
  [[nodiscard]] const std::string& name() const noexcept;
  [[nodiscard]] bool is_creator() const noexcept;
  /// False once closed or unlinked (or moved from, or inherited across fork()).
  [[nodiscard]] bool is_open() const noexcept;
  [[nodiscard]] TopicStats stats() const noexcept;
  void set_latency(Latency latency) noexcept;
  void set_spin(std::chrono::nanoseconds spin) noexcept;
  [[nodiscard]] Latency latency() const noexcept;
  /// Lets go of the topic in this process (subscribers made from it stay
  /// usable until closed). The topic and its messages stay.
  void close() noexcept;
  /// Removes the name (creator only) and wakes every waiter of every process
  /// with `Unlinked`; the topic's memory goes when the last handle lets go.
  Result<void, UnlinkError> unlink();
  [[nodiscard]] Domain domain() const;

 private:
  std::shared_ptr<detail::TopicState> state_;
};

}  // namespace hakobu
