// hakobu — loans any channel hands out (queues, topics): one implementation of
// the argument checks and of the array metadata written into them.
#pragma once

#include <cstddef>
#include <cstdint>
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

}  // namespace hakobu::detail
