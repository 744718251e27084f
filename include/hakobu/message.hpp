// hakobu — messages: loans (being written) and samples (received).
//
// Both are move-only handles on one reference to a block of the domain's
// shared heap (or, for a small received message, on a private copy of it).
// The block returns to the heap when the last reference goes: when a loan is
// dropped unsent, or when the sample that received it is released. A process
// that dies while holding either has its references reclaimed by the domain.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "hakobu/array.hpp"
#include "hakobu/error.hpp"

namespace hakobu {

namespace detail {
class DomainState;
/// The library's one way into the private parts of loans and samples (how
/// the domain makes them and queues send and fill them); defined in
/// src/channel/message_access.hpp, which is not installed. Not API.
struct MessageAccess;
}  // namespace detail

/// What a message contains; travels with the message.
enum class MessageKind : std::uint8_t {
  Bytes = 1,   ///< Raw bytes.
  Array = 2,   ///< Array metadata followed by the elements (see array.hpp).
  Object = 3,  ///< A serialized object (the Python layer's pickle format).
};

class Sample;
class StoreValue;

/// Where memory attached with `Loan::attach(const StoreValue&, ...)` lies in the
/// message: in attachment `index`, from byte `offset` of it (the receiver reads
/// `sample.attachment(index)->subspan(offset, size)`).
struct AttachedRange {
  std::size_t index = 0;
  std::uint64_t offset = 0;
};

/// Largest payload carried inline in a queue slot instead of a heap block.
inline constexpr std::size_t kMaxInlineBytes = 224;

/// A block of shared memory this process is writing, to be sent without a copy
/// with `Queue::put(std::move(loan))`. Dropping an unsent loan frees its block.
class Loan {
 public:
  Loan() = default;
  Loan(Loan&& other) noexcept;
  Loan& operator=(Loan&& other) noexcept;
  Loan(const Loan&) = delete;
  Loan& operator=(const Loan&) = delete;
  ~Loan();

  /// The whole payload (for an array loan: metadata, then elements).
  [[nodiscard]] std::span<std::byte> bytes() const noexcept { return {data_, size_}; }
  [[nodiscard]] MessageKind kind() const noexcept { return kind_; }
  /// The array view of an array loan (elements are writable).
  [[nodiscard]] Result<ArrayView, ArrayError> array() const noexcept;
  /// Shrinks the payload to `size` bytes (e.g. after writing less than loaned).
  void shrink(std::size_t size) noexcept {
    if (size < size_) size_ = size;
  }

  /// Attachments: the message holds references to other blocks of shared memory
  /// (the elements of an array sent by reference, buffers of a serialized
  /// object), which travel with it without a copy and stay alive until the
  /// receiver releases the message. The loan must have been made with room for
  /// them (`Queue::loan(size, kind, attachments)`). Returns the attachment's index.
  Result<std::size_t, AttachError> attach(const Loan& source);
  /// Attaches the block a received message lives in.
  Result<std::size_t, AttachError> attach(const Sample& source);
  /// Attaches attachment `index` of a received message (forwarding its data).
  Result<std::size_t, AttachError> attach(const Sample& source, std::size_t index);
  /// Attaches, without a copy, the block of a store value's memory that holds
  /// `range` (the value's bytes, or one of its attachments such as an array's
  /// elements): the message takes its own counted reference to that block, so
  /// the receiver reads the very version the sender held, whatever is
  /// published or erased under the key, or unlinked, meanwhile. NotShared when
  /// `range` is empty or not inside the value's memory.
  Result<AttachedRange, AttachError> attach(const StoreValue& value, std::span<const std::byte> range);
  /// Attaches the store value's bytes (`attach(value, value.bytes())`).
  Result<AttachedRange, AttachError> attach(const StoreValue& value);
  /// Attachments added so far, and room for more.
  [[nodiscard]] std::size_t attachment_count() const noexcept;
  [[nodiscard]] std::size_t attachment_capacity() const noexcept { return attachment_capacity_; }
  [[nodiscard]] bool valid() const noexcept { return data_ != nullptr; }
  explicit operator bool() const noexcept { return valid(); }

 private:
  friend struct detail::MessageAccess;
  void release() noexcept;
  Result<std::size_t, AttachError> attach_block(std::uint64_t block, const detail::DomainState* domain);

  std::shared_ptr<detail::DomainState> domain_;
  std::uint64_t block_ = 0;       // heap offset of the block
  std::uint32_t holding_ = 0;     // index in this process's holdings table
  std::uint32_t fork_epoch_ = 0;  // a copy inherited by fork() never frees
  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
  std::uint32_t attachment_capacity_ = 0;
  MessageKind kind_ = MessageKind::Bytes;
};

/// A received message. The receiver owns it: its bytes are writable. Valid until
/// released (destroyed or `reset()`); its memory then returns to the heap.
/// A small message is copied into the sample itself, so moving a sample moves
/// its bytes: take `bytes()` and `array()` again after a move.
class Sample {
 public:
  Sample() = default;
  Sample(Sample&& other) noexcept;
  Sample& operator=(Sample&& other) noexcept;
  Sample(const Sample&) = delete;
  Sample& operator=(const Sample&) = delete;
  ~Sample();

  [[nodiscard]] std::span<std::byte> bytes() noexcept { return {data(), size_}; }
  [[nodiscard]] std::span<const std::byte> bytes() const noexcept { return {data(), size_}; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] MessageKind kind() const noexcept { return kind_; }
  /// The array view of an array message, bounds-checked.
  [[nodiscard]] Result<ArrayView, ArrayError> array() noexcept;
  /// True when the message lives in a shared block (false: a small inline copy).
  [[nodiscard]] bool in_shared_memory() const noexcept { return block_ != 0; }
  /// Number of attachments (blocks the message holds; see Loan::attach).
  [[nodiscard]] std::size_t attachment_count() const noexcept;
  /// The bytes of attachment `index`, bounds-checked (Corrupt if it fails the checks).
  [[nodiscard]] Result<std::span<std::byte>, GetError> attachment(std::size_t index) const;
  /// Releases the message now.
  void reset() noexcept;
  [[nodiscard]] bool valid() const noexcept { return valid_; }
  explicit operator bool() const noexcept { return valid(); }

  /// Heap offset of the block (0 for inline); used by language bindings.
  [[nodiscard]] std::uint64_t block_offset() const noexcept { return block_; }

 private:
  friend struct detail::MessageAccess;
  [[nodiscard]] std::byte* data() const noexcept {
    return block_ != 0 ? shared_data_
                       : const_cast<std::byte*>(inline_);  // NOLINT(cppcoreguidelines-pro-type-const-cast)
  }

  std::shared_ptr<detail::DomainState> domain_;
  std::uint64_t block_ = 0;
  std::uint32_t holding_ = 0;
  std::uint32_t fork_epoch_ = 0;
  std::byte* shared_data_ = nullptr;
  std::size_t size_ = 0;
  MessageKind kind_ = MessageKind::Bytes;
  bool valid_ = false;
  alignas(64) std::byte inline_[kMaxInlineBytes]{};
};

}  // namespace hakobu
