// hakobu — loans any channel hands out (queues, topics): one implementation of
// the argument checks and of the array metadata written into them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>

#include "hakobu/array.hpp"
#include "hakobu/error.hpp"
#include "hakobu/message.hpp"

namespace hakobu::detail {

class DomainState;

/// Queue::loan_array's contract: a contiguous array of `dtype` and `shape`, metadata written.
Result<Loan, LoanError> lend_array(DomainState& domain, DType dtype, std::span<const std::int64_t> shape, Order order,
                                   std::string_view typestr, const void* copy_source);
/// Queue::loan_array_ref's contract: array metadata whose elements live in attachment 0.
Result<Loan, LoanError> lend_array_ref(DomainState& domain, DType dtype, std::span<const std::int64_t> shape,
                                       std::span<const std::int64_t> strides, std::int64_t byte_offset,
                                       std::string_view typestr);

/// A loan holding a copy of `bytes` (placed for that copy), for a message too
/// large for a slot; the loan's failure as the send's.
Result<Loan, PutError> copy_into_loan(DomainState& domain, std::span<const std::byte> bytes, MessageKind kind);

/// Queue::put_array's contract for any channel: a contiguous array copied from
/// `data` rides inline through `send_inline(bytes)` when its metadata and
/// elements fit in `inline_capacity` bytes, else in a loan placed for the copy,
/// sent with `send_loan(loan)`. Both return Result<void, PutError>.
template <class SendInline, class SendLoan>
Result<void, PutError> send_array(DomainState& domain, std::size_t inline_capacity, const void* data, DType dtype,
                                  std::span<const std::int64_t> shape, SendInline&& send_inline, SendLoan&& send_loan) {
  if (shape.size() > kMaxArrayDims) return {PutError::TooLarge, "too many dimensions"};
  auto data_bytes = contiguous_bytes(dtype, shape);
  if (!data_bytes) return {PutError::TooLarge, data_bytes.error().message};
  const std::size_t meta = array_meta_size(shape.size(), 0);
  const std::size_t total = meta + *data_bytes;
  if (total <= inline_capacity && total <= kMaxInlineBytes) {
    alignas(64) std::byte buffer[kMaxInlineBytes];
    write_array_meta({buffer, meta}, dtype, shape, {}, 0, {}, Order::C);
    if (*data_bytes > 0) std::memcpy(buffer + meta, data, *data_bytes);
    return send_inline(std::span<const std::byte>(buffer, total));
  }
  auto made = lend_array(domain, dtype, shape, Order::C, {}, data);
  if (!made) {
    const auto code = made.error().code == LoanError::OutOfMemory ? PutError::OutOfMemory : PutError::TooLarge;
    return {code, made.error().message};
  }
  if (*data_bytes > 0) std::memcpy(made->bytes().data() + meta, data, *data_bytes);
  return send_loan(*made);
}

}  // namespace hakobu::detail
