// hakobu — loans and samples.
#include "hakobu/message.hpp"

#include <cstring>
#include <optional>
#include <utility>

#include "channel/message_access.hpp"
#include "domain/domain_state.hpp"
#include "hakobu/store.hpp"
#include "support/kill_point.hpp"

namespace hakobu {

Loan::Loan(Loan&& other) noexcept
    : domain_(std::move(other.domain_)),
      block_(std::exchange(other.block_, 0)),
      holding_(other.holding_),
      fork_epoch_(other.fork_epoch_),
      data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      attachment_capacity_(std::exchange(other.attachment_capacity_, 0)),
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
    attachment_capacity_ = std::exchange(other.attachment_capacity_, 0);
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

namespace {

// The bytes of the block at heap offset `block` (held by the caller), checked.
Result<std::span<std::byte>, GetError> block_bytes(detail::Heap& heap, std::uint64_t block) {
  if (!heap.check_block(block, 0)) return {GetError::Corrupt, "an attachment failed validation"};
  const std::uint64_t size = heap.header(block)->payload_bytes.load(std::memory_order_relaxed);
  std::byte* const data = heap.checked_payload(block, size);
  if (data == nullptr) return {GetError::Corrupt, "an attachment's size failed validation"};
  return std::span<std::byte>(data, size);
}

// Attachment `index` of the block at `block`, checked; 0 if there is none.
std::uint64_t attachment_of(detail::Heap& heap, std::uint64_t block, std::size_t index) {
  const auto table = heap.attachments(block);
  return index < table.size() ? table[index].load(std::memory_order_acquire) : 0;
}

// The array view of an array message in `message`, wherever its elements are.
template <class Attachment>
Result<ArrayView, ArrayError> array_of(std::span<std::byte> message, Attachment&& attachment) {
  const std::uint32_t source = array_data_attachment(message);
  if (source == 0) return parse_array(message);
  auto data = attachment(source - 1);
  if (!data) return {ArrayError::Corrupt, "the array's elements: " + data.error().message};
  return parse_array(message, *data);
}

}  // namespace

namespace {
constexpr const char* kInherited = "inherited across fork(): the domain's bookkeeping is not mapped in this process";
}  // namespace

Result<ArrayView, ArrayError> Loan::array() const noexcept {
  if (kind_ != MessageKind::Array) return {ArrayError::NotAnArray, "the loan is not an array"};
  if (fork_epoch_ != detail::fork_epoch()) return {ArrayError::Corrupt, kInherited};
  return array_of(bytes(), [&](std::size_t index) -> Result<std::span<std::byte>, GetError> {
    const std::uint64_t child = attachment_of(domain_->heap(), block_, index);
    if (child == 0) return {GetError::Corrupt, "the attachment was never attached"};
    return block_bytes(domain_->heap(), child);
  });
}

std::size_t Loan::attachment_count() const noexcept {
  return valid() && fork_epoch_ == detail::fork_epoch() ? domain_->heap().header(block_)->attachment_count : 0;
}

Result<std::size_t, AttachError> Loan::attach_block(std::uint64_t block, const detail::DomainState* domain) {
  if (!valid() || fork_epoch_ != detail::fork_epoch()) return {AttachError::Invalid, "the loan was sent or released"};
  if (block == 0) return {AttachError::NotShared, "the source is not in shared memory (an empty or inline message)"};
  if (domain != domain_.get()) return {AttachError::OtherDomain, "the source lives in another domain"};
  auto& heap = domain_->heap();
  detail::BlockHeader* h = heap.header(block_);
  // The header is in shared memory: count and table are checked before the write.
  const std::uint32_t index = h->attachment_count;
  if (index >= attachment_capacity_) {
    return {AttachError::NoRoom, "the loan has room for " + std::to_string(attachment_capacity_) + " attachments"};
  }
  const std::uint64_t table_offset = h->attachment_table;
  std::byte* const payload =
      table_offset % 8 != 0 || table_offset > heap.capacity()
          ? nullptr
          : heap.checked_payload(block_, table_offset + (std::uint64_t{index} + 1) * sizeof(std::uint64_t));
  if (payload == nullptr) return {AttachError::Invalid, "the loan's attachment table is damaged"};
  // Counted before listed: a death in between leaks, never frees twice.
  if (!heap.add_ref(block)) return {AttachError::Invalid, "the source block is no longer held by anyone"};
  detail::kill_point("attach.counted");
  auto* table = reinterpret_cast<std::atomic<std::uint64_t>*>(payload + table_offset);  // NOLINT
  table[index].store(block, std::memory_order_release);
  h->attachment_count = index + 1;
  return static_cast<std::size_t>(index);
}

Result<std::size_t, AttachError> Loan::attach(const Loan& source) {
  return attach_block(source.valid() ? source.block_ : 0, source.domain_.get());
}

Result<std::size_t, AttachError> Loan::attach(const Sample& source) {
  return attach_block(source.valid() ? source.block_offset() : 0, detail::MessageAccess::domain(source));
}

Result<std::size_t, AttachError> Loan::attach(const Sample& source, std::size_t index) {
  if (!source.valid() || source.block_offset() == 0) {
    return {AttachError::NotShared, "the message has no attachments"};
  }
  detail::DomainState* const domain = detail::MessageAccess::domain(source);
  const std::uint64_t child = attachment_of(domain->heap(), source.block_offset(), index);
  if (child == 0 || !domain->heap().check_block(child, 0)) {
    return {AttachError::Invalid, "the message has no valid attachment " + std::to_string(index)};
  }
  return attach_block(child, domain);
}

// A store value's memory is one to three blocks: the record (the value's bytes
// follow its header when inline), or the value's own block (attached to the
// record), and that block's attachments (e.g. an array's elements). The block
// attached is the one whose payload holds the range: the smallest thing to keep
// alive, and a receiver needs nothing of the store's layout to read it. The
// caller's StoreValue holds the record, the record the value block, the value
// block its attachments, so each count is above zero while we add ours.
Result<AttachedRange, AttachError> Loan::attach(const StoreValue& value, std::span<const std::byte> range) {
  if (!value.valid() || value.fork_epoch_ != detail::fork_epoch()) {
    return {AttachError::NotShared, "the store value was released (or inherited across fork())"};
  }
  if (range.empty()) return {AttachError::NotShared, "an empty range has no memory to attach"};
  detail::Heap& heap = value.domain_->heap();
  const auto start =
      reinterpret_cast<std::uintptr_t>(range.data());  // NOLINT(cppcoreguidelines-pro-type-reinterpret-cast)
  // The payload offset of the range in `block` when the whole range lies in it.
  auto offset_in = [&](std::uint64_t block) -> std::optional<std::uint64_t> {
    auto bytes = block_bytes(heap, block);
    if (!bytes) return std::nullopt;
    const auto first =
        reinterpret_cast<std::uintptr_t>(bytes->data());  // NOLINT(cppcoreguidelines-pro-type-reinterpret-cast)
    if (start < first || start - first > bytes->size() || range.size() > bytes->size() - (start - first)) {
      return std::nullopt;
    }
    return start - first;
  };
  std::uint64_t found = 0;
  std::optional<std::uint64_t> offset;
  const std::uint64_t bytes_block = value.value_block_ != 0 ? value.value_block_ : value.record_;
  if ((offset = offset_in(bytes_block))) {
    found = bytes_block;
  } else if (value.value_block_ != 0) {
    // The table was written before the value was published and never after; each entry is checked all the same.
    const auto table = heap.attachments(value.value_block_);
    for (const auto& entry : table) {
      const std::uint64_t child = entry.load(std::memory_order_acquire);
      if (child != 0 && (offset = offset_in(child))) {
        found = child;
        break;
      }
    }
  }
  if (found == 0) return {AttachError::NotShared, "the range is not inside the store value's memory"};
  auto index = attach_block(found, value.domain_.get());
  if (!index) return index.error();
  return AttachedRange{*index, *offset};
}

Result<AttachedRange, AttachError> Loan::attach(const StoreValue& value) {
  return attach(value, value.bytes());
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
  if (block_ != 0 && fork_epoch_ != detail::fork_epoch()) return {ArrayError::Corrupt, kInherited};
  return array_of(bytes(), [&](std::size_t index) { return attachment(index); });
}

std::size_t Sample::attachment_count() const noexcept {
  return valid_ && block_ != 0 && fork_epoch_ == detail::fork_epoch() ? domain_->heap().attachments(block_).size() : 0;
}

Result<std::span<std::byte>, GetError> Sample::attachment(std::size_t index) const {
  if (!valid_ || block_ == 0) return {GetError::Corrupt, "the message has no attachments"};
  if (fork_epoch_ != detail::fork_epoch()) return {GetError::Closed, kInherited};
  const std::uint64_t child = attachment_of(domain_->heap(), block_, index);
  if (child == 0) return {GetError::Corrupt, "the message has no attachment " + std::to_string(index)};
  return block_bytes(domain_->heap(), child);
}

}  // namespace hakobu
