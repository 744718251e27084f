// hakobu — loans any channel hands out (loans.hpp).
#include "channel/loans.hpp"

#include <cstring>
#include <string>
#include <utility>

#include "domain/domain_state.hpp"

namespace hakobu::detail {

Result<Loan, LoanError> lend_array(DomainState& domain, DType dtype, std::span<const std::int64_t> shape, Order order,
                                   std::string_view typestr, const void* copy_source) {
  if (shape.size() > kMaxArrayDims || typestr.size() > kMaxTypestrBytes) {
    return {LoanError::InvalidArgument, "arrays have at most " + std::to_string(kMaxArrayDims) +
                                            " dimensions and a type string of at most " +
                                            std::to_string(kMaxTypestrBytes) + " bytes"};
  }
  auto data_bytes = contiguous_bytes(dtype, shape);
  if (!data_bytes) return std::move(data_bytes).error();
  const std::size_t meta = array_meta_size(shape.size(), typestr.size());
  // The elements are what is copied: they are placed, not the metadata.
  auto made = domain.make_loan(meta + *data_bytes, MessageKind::Array, 0, Placement{meta, copy_source});
  if (!made) return made;
  write_array_meta(made->bytes().first(meta), dtype, shape, {}, 0, typestr, order);
  return made;
}

Result<Loan, LoanError> lend_array_ref(DomainState& domain, DType dtype, std::span<const std::int64_t> shape,
                                       std::span<const std::int64_t> strides, std::int64_t byte_offset,
                                       std::string_view typestr) {
  if (shape.size() > kMaxArrayDims || strides.size() != shape.size() || typestr.size() > kMaxTypestrBytes) {
    return {LoanError::InvalidArgument,
            "shape and strides must have the same length, at most " + std::to_string(kMaxArrayDims)};
  }
  const std::size_t meta = array_meta_size(shape.size(), typestr.size());
  auto made = domain.make_loan(meta, MessageKind::Array, 1);
  if (!made) return made;
  write_array_meta(made->bytes(), dtype, shape, strides, byte_offset, typestr, Order::C, 1);
  return made;
}

Result<Loan, PutError> copy_into_loan(DomainState& domain, std::span<const std::byte> bytes, MessageKind kind) {
  auto loan = domain.make_loan(bytes.size(), kind, 0, Placement{0, bytes.data()});
  if (!loan) {
    const auto code = loan.error().code == LoanError::TooLarge ? PutError::TooLarge : PutError::OutOfMemory;
    return {code, loan.error().message};
  }
  std::memcpy(loan->bytes().data(), bytes.data(), bytes.size());
  return std::move(*loan);
}

}  // namespace hakobu::detail
