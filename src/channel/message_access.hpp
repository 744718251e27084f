// hakobu — the library's one door into loans and samples.
//
// Access rules
// ------------
// `Loan` and `Sample` (include/hakobu/message.hpp) keep their fields private
// and name exactly one friend, `detail::MessageAccess`, declared there and
// defined here, in a header that is not installed. Everything inside the
// library that makes, fills or hands over a message goes through it:
//   * the domain (DomainState::make_loan) makes a loan from a block it has
//     allocated, counted and listed in this process's holdings;
//   * a queue's send (Queue::put_loan) reads which block and holdings entry a
//     loan stands for, and once the ring holds the reference makes the loan
//     forget it (`hand_over`) without dropping it;
//   * a queue's receive fills a sample, either with an inline copy of a small
//     message (`fill_inline`) or with a listed block (`fill_shared`);
//   * a loan attaching a received message reads the sample's block and domain.
// So the invariant "a valid loan or shared sample is one counted reference,
// listed at `holding`, that its destructor drops" is kept in two places only:
// message.cpp and this header. The functions are inline: put and get are the
// hot path, and a door must not cost a call.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <utility>

#include "hakobu/message.hpp"

namespace hakobu::detail {

struct MessageAccess {
  /// One counted, listed reference to a block, and what a loan shows of it.
  struct LoanParts {
    std::shared_ptr<DomainState> domain;
    std::uint64_t block = 0;        ///< heap offset of the block
    std::uint32_t holding = 0;      ///< its entry in this process's holdings table
    std::uint32_t fork_epoch = 0;   ///< the epoch of the process that listed it
    std::byte* data = nullptr;      ///< the block's payload
    std::size_t size = 0;           ///< payload bytes
    std::uint32_t attachments = 0;  ///< room in the attachment table
    MessageKind kind = MessageKind::Bytes;
  };

  /// One counted, listed reference to a received block, checked by the caller.
  struct SampleParts {
    std::shared_ptr<DomainState> domain;
    std::uint64_t block = 0;
    std::uint32_t holding = 0;
    std::uint32_t fork_epoch = 0;
    std::byte* data = nullptr;  ///< from Heap::checked_payload, never re-read from the block header
    std::size_t size = 0;
    MessageKind kind = MessageKind::Bytes;
  };

  [[nodiscard]] static Loan make_loan(LoanParts parts) noexcept {
    Loan loan;
    loan.domain_ = std::move(parts.domain);
    loan.block_ = parts.block;
    loan.holding_ = parts.holding;
    loan.fork_epoch_ = parts.fork_epoch;
    loan.data_ = parts.data;
    loan.size_ = parts.size;
    loan.attachment_capacity_ = parts.attachments;
    loan.kind_ = parts.kind;
    return loan;
  }

  [[nodiscard]] static const DomainState* domain(const Loan& loan) noexcept { return loan.domain_.get(); }
  [[nodiscard]] static std::uint64_t block(const Loan& loan) noexcept { return loan.block_; }
  [[nodiscard]] static std::uint32_t holding(const Loan& loan) noexcept { return loan.holding_; }
  [[nodiscard]] static std::uint32_t fork_epoch(const Loan& loan) noexcept { return loan.fork_epoch_; }

  /// The loan's reference now belongs to a ring slot (already unlisted): the
  /// loan becomes empty without dropping it.
  static void hand_over(Loan& loan) noexcept {
    loan.domain_.reset();
    loan.data_ = nullptr;
    loan.block_ = 0;
    loan.size_ = 0;
  }

  /// An empty sample takes a listed block.
  static void fill_shared(Sample& sample, SampleParts parts) noexcept {
    sample.domain_ = std::move(parts.domain);
    sample.block_ = parts.block;
    sample.holding_ = parts.holding;
    sample.fork_epoch_ = parts.fork_epoch;
    sample.shared_data_ = parts.data;
    sample.size_ = parts.size;
    sample.kind_ = parts.kind;
    sample.valid_ = true;
  }

  /// An empty sample takes a copy of a small message; `length` was checked
  /// against the queue's inline capacity (at most kMaxInlineBytes).
  static void fill_inline(Sample& sample, const std::byte* bytes, std::size_t length, MessageKind kind) noexcept {
    if (length > 0) std::memcpy(sample.inline_, bytes, length);
    sample.size_ = length;
    sample.kind_ = kind;
    sample.valid_ = true;
  }

  [[nodiscard]] static DomainState* domain(const Sample& sample) noexcept { return sample.domain_.get(); }
};

}  // namespace hakobu::detail
