// hakobu — loans and samples.
#include "hakobu/buffer.hpp"

#include <cstring>
#include <utility>

#include "registry/domain_state.hpp"

namespace hakobu {

Loan::Loan(Loan&& other) noexcept
    : domain_(std::move(other.domain_)),
      block_(std::exchange(other.block_, 0)),
      holding_(other.holding_),
      fork_epoch_(other.fork_epoch_),
      data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      kind_(other.kind_) {}

Loan& Loan::operator=(Loan&& other) noexcept {
  if (this != &other) {
    release();
    domain_ = std::move(other.domain_);
    block_ = std::exchange(other.block_, 0);
    holding_ = other.holding_;
    fork_epoch_ = other.fork_epoch_;
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    kind_ = other.kind_;
  }
  return *this;
}

Loan::~Loan() {
  release();
}

void Loan::release() noexcept {
  // A loan inherited across fork() is the parent's to free.
  if (domain_ && block_ != 0 && fork_epoch_ == detail::fork_epoch()) domain_->release(holding_, block_);
  domain_.reset();
  block_ = 0;
  data_ = nullptr;
  size_ = 0;
}

Result<ArrayView, ArrayError> Loan::array() const noexcept {
  if (kind_ != MessageKind::Array) return {ArrayError::NotAnArray, "the loan is not an array"};
  return parse_array(bytes());
}

Sample::Sample(Sample&& other) noexcept {
  *this = std::move(other);
}

Sample& Sample::operator=(Sample&& other) noexcept {
  if (this != &other) {
    reset();
    domain_ = std::move(other.domain_);
    block_ = std::exchange(other.block_, 0);
    holding_ = other.holding_;
    fork_epoch_ = other.fork_epoch_;
    shared_data_ = std::exchange(other.shared_data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    kind_ = other.kind_;
    valid_ = std::exchange(other.valid_, false);
    if (block_ == 0 && size_ > 0) std::memcpy(inline_, other.inline_, size_);
  }
  return *this;
}

Sample::~Sample() {
  reset();
}

void Sample::reset() noexcept {
  if (domain_ && block_ != 0 && fork_epoch_ == detail::fork_epoch()) domain_->release(holding_, block_);
  domain_.reset();
  block_ = 0;
  shared_data_ = nullptr;
  size_ = 0;
  valid_ = false;
}

Result<ArrayView, ArrayError> Sample::array() noexcept {
  if (kind_ != MessageKind::Array) return {ArrayError::NotAnArray, "the message is not an array"};
  return parse_array(bytes());
}

}  // namespace hakobu
