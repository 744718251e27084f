// hakobu — the public face of domains, names and error texts.
#include "hakobu/domain.hpp"

#include <cstdlib>

#include "domain/domain_state.hpp"
#include "hakobu/domain_files.hpp"
#include "platform/os.hpp"

namespace hakobu {

std::string default_domain_name() {
  if (const char* env = std::getenv("HAKOBU_DOMAIN"); env != nullptr && *env != '\0') return env;  // NOLINT
  return "u" + std::to_string(platform::user_id());
}

std::string validate_name(std::string_view name) {
  constexpr std::size_t kMaxNameBytes = 64;
  if (name.empty()) return "a name cannot be empty";
  if (name.size() > kMaxNameBytes) {
    return "a name has at most " + std::to_string(kMaxNameBytes) + " characters, this one has " +
           std::to_string(name.size());
  }
  if (name.front() == '.' || name.front() == '-') return "a name cannot start with '.' or '-'";
  for (const char c : name) {
    const bool ok =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    if (!ok) return "only letters, digits, '.', '_' and '-' are allowed (no '/')";
  }
  if (name.find("..") != std::string_view::npos) return "a name cannot contain '..'";
  return {};
}

Result<Domain, OpenError> Domain::open(const DomainOptions& options) {
  auto state = detail::DomainState::attach(options);
  if (!state) return std::move(state).error();
  return Domain(std::move(*state));
}

Domain::~Domain() = default;

const std::string& Domain::name() const noexcept {
  static const std::string empty;
  return state_ ? state_->name() : empty;
}

std::size_t Domain::collect_garbage() {
  return state_ ? state_->collect_garbage() : 0;
}

DomainStats Domain::stats() const {
  return state_ ? state_->stats() : DomainStats{};
}

std::uint32_t Domain::process_slot() const noexcept {
  return state_ ? state_->slot() : 0;
}

Result<Loan, LoanError> Domain::loan(std::size_t size, MessageKind kind) {
  if (!state_ || state_->forked_away()) return {LoanError::Closed, "the domain handle is closed"};
  return state_->make_loan(size, kind);
}

void Domain::leave_all_at_exit() noexcept {
  detail::DomainState::leave_all();
}

std::string Domain::file_prefix(std::string_view name) {
  return std::string(kFileNamePrefix) + std::string(name) + ":";
}

std::string_view to_string(OpenError code) noexcept {
  switch (code) {
    case OpenError::InvalidName: return "InvalidName";
    case OpenError::NotFound: return "NotFound";
    case OpenError::AlreadyExists: return "AlreadyExists";
    case OpenError::PermissionDenied: return "PermissionDenied";
    case OpenError::Incompatible: return "Incompatible";
    case OpenError::Corrupt: return "Corrupt";
    case OpenError::OutOfMemory: return "OutOfMemory";
    case OpenError::TooManyProcesses: return "TooManyProcesses";
    case OpenError::InvalidArgument: return "InvalidArgument";
    case OpenError::SystemError: return "SystemError";
  }
  return "?";
}

std::string_view to_string(PutError code) noexcept {
  switch (code) {
    case PutError::Full: return "Full";
    case PutError::Timeout: return "Timeout";
    case PutError::Closed: return "Closed";
    case PutError::Unlinked: return "Unlinked";
    case PutError::TooLarge: return "TooLarge";
    case PutError::OutOfMemory: return "OutOfMemory";
    case PutError::Invalid: return "Invalid";
  }
  return "?";
}

std::string_view to_string(GetError code) noexcept {
  switch (code) {
    case GetError::Empty: return "Empty";
    case GetError::Timeout: return "Timeout";
    case GetError::Closed: return "Closed";
    case GetError::Unlinked: return "Unlinked";
    case GetError::Corrupt: return "Corrupt";
    case GetError::OutOfMemory: return "OutOfMemory";
    case GetError::Ended: return "Ended";
    case GetError::SendersLost: return "SendersLost";
  }
  return "?";
}

std::string_view to_string(LoanError code) noexcept {
  switch (code) {
    case LoanError::TooLarge: return "TooLarge";
    case LoanError::OutOfMemory: return "OutOfMemory";
    case LoanError::Closed: return "Closed";
    case LoanError::InvalidArgument: return "InvalidArgument";
  }
  return "?";
}

std::string_view to_string(UnlinkError code) noexcept {
  switch (code) {
    case UnlinkError::NotCreator: return "NotCreator";
    case UnlinkError::Closed: return "Closed";
    case UnlinkError::NotFound: return "NotFound";
    case UnlinkError::InvalidName: return "InvalidName";
    case UnlinkError::PermissionDenied: return "PermissionDenied";
    case UnlinkError::SystemError: return "SystemError";
  }
  return "?";
}

std::string_view to_string(AttachError code) noexcept {
  switch (code) {
    case AttachError::NoRoom: return "NoRoom";
    case AttachError::NotShared: return "NotShared";
    case AttachError::OtherDomain: return "OtherDomain";
    case AttachError::Invalid: return "Invalid";
  }
  return "?";
}

std::string_view to_string(ArrayError code) noexcept {
  switch (code) {
    case ArrayError::NotAnArray: return "NotAnArray";
    case ArrayError::Corrupt: return "Corrupt";
  }
  return "?";
}

}  // namespace hakobu
