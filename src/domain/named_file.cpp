// hakobu — a named object's file (protocol and locking rules in named_file.hpp).
#include "domain/named_file.hpp"

#include <utility>

#include "platform/os.hpp"

namespace hakobu::detail {

NamedFile::~NamedFile() {
  if (fd_ >= 0 || base_ != nullptr) {
    // Inherited across fork(): the descriptor was closed (and its number may
    // be another file's now); the mapping was not inherited, unless the file
    // has no locks (then it is this process's copy, unmapped here).
    if (epoch_ != fork_epoch()) {
      if (!locks_) platform::unmap(base_, bytes_);
      return;
    }
    release();
  }
}

void NamedFile::release() noexcept {
  platform::unmap(base_, bytes_);
  base_ = nullptr;
  bytes_ = 0;
  if (fd_ >= 0) keep_after_fork(fd_);
  platform::close_fd(fd_);  // drops any lock taken through it
  fd_ = -1;
  attached_ = false;
}

Result<void, OpenError> NamedFile::map(std::uint64_t bytes) {
  auto mapped = platform::map_shared(fd_, bytes);
  if (!mapped) return to_open_error(mapped);
  base_ = static_cast<std::byte*>(*mapped);
  bytes_ = bytes;
  // A child of fork() must not hold the file (and its lifecycle lock) through the mapping.
  if (locks_) platform::keep_from_children(base_, bytes);
  return {};
}

Result<void, OpenError> NamedFile::open(const DomainFile& file) {
  auto opened = open_domain_file(file, false);
  if (!opened) return std::move(opened).error();
  fd_ = *opened;
  epoch_ = fork_epoch();
  close_after_fork(fd_);
  return {};
}

Result<void, OpenError> NamedFile::create(DomainState& domain, std::string_view object_name, const std::string& file,
                                          std::string_view what, std::uint64_t bytes,
                                          const std::function<void(std::byte* base)>& write_header,
                                          std::string_view taken_what) {
  const std::string temporary = domain.temporary_file_name(object_name);
  auto created = open_domain_file({temporary, true, std::string(what)}, true);
  if (!created) return std::move(created).error();
  fd_ = *created;
  epoch_ = fork_epoch();
  close_after_fork(fd_);
  auto discard = [&](Error<OpenError> error) -> Result<void, OpenError> {
    (void)platform::shm_remove(temporary);
    release();
    return error;
  };
  if (auto backed = platform::allocate(fd_, 0, bytes); !backed) {
    auto error = to_open_error(backed);
    error.message = "creating " + std::string(what) + " (" + format_bytes(bytes) + "): " + error.message;
    return discard(std::move(error));
  }
  if (auto r = map(bytes); !r) return discard(std::move(r).error());
  write_header(base_);  // stores the magic last (release)
  if (locks_) {
    if (auto shared = platform::lock_byte(fd_, locks_->lifecycle, false); !shared) {
      return discard(to_open_error(shared));
    }
  }
  if (auto published = domain.publish_file(temporary, file, taken_what.empty() ? what : taken_what); !published) {
    return discard(std::move(published).error());
  }
  attached_ = true;
  return {};
}

Result<void, OpenError> NamedFile::attach(const AttachRules& rules) {
  if (locks_) {
    if (auto locked = platform::lock_byte(fd_, locks_->init, false); !locked) {
      auto error = to_open_error(locked);
      release();
      return error;
    }
  }
  auto fail = [&](OpenError code, std::string message) -> Result<void, OpenError> {
    if (locks_) platform::unlock_byte(fd_, locks_->init);
    release();
    return {code, std::move(message)};
  };
  auto info = platform::file_info(fd_);
  if (!info) return fail(to_open_error(info).code, info.error().message);
  if (info->links == 0) return fail(OpenError::NotFound, rules.removed);
  // Reading past the end of a short file would be a SIGBUS.
  if (info->size < rules.header_bytes) return fail(OpenError::Corrupt, rules.too_small);
  if (auto r = map(rules.header_bytes); !r) return fail(r.error().code, r.error().message);
  auto checked = rules.check_header(base_, info->size);
  if (!checked) return fail(checked.error().code, checked.error().message);
  const std::uint64_t whole = *checked;
  if (whole < rules.header_bytes || whole > info->size) return fail(OpenError::Corrupt, rules.too_small);
  if (whole != bytes_) {
    platform::unmap(base_, bytes_);
    base_ = nullptr;
    bytes_ = 0;
    if (auto r = map(whole); !r) return fail(r.error().code, r.error().message);
  }
  if (rules.unlinked && rules.unlinked(base_)) return fail(OpenError::NotFound, rules.removed);
  if (locks_) {
    auto shared = platform::lock_byte(fd_, locks_->lifecycle, false);
    platform::unlock_byte(fd_, locks_->init);
    if (!shared) {
      auto error = to_open_error(shared);
      release();
      return error;
    }
  }
  attached_ = true;
  return {};
}

void NamedFile::close(const std::function<void()>& last_out) noexcept {
  if (epoch_ != fork_epoch()) return;  // the parent's (see the destructor)
  if (attached_ && locks_ && base_ != nullptr) {
    if (platform::lock_byte(fd_, locks_->init, true)) {
      platform::unlock_byte(fd_, locks_->lifecycle);
      auto last = platform::try_lock_byte(fd_, locks_->lifecycle, true);
      if (last && *last && last_out) last_out();
      platform::unlock_byte(fd_, locks_->lifecycle);
      platform::unlock_byte(fd_, locks_->init);
    }
  }
  release();
}

void NamedFile::close_descriptor() noexcept {
  if (fd_ >= 0) keep_after_fork(fd_);
  platform::close_fd(fd_);
  fd_ = -1;
}

NamedFile::AttachRules NamedFile::rules_for(const std::string& what, std::string_view name,
                                            std::uint64_t header_bytes) {
  AttachRules rules;
  rules.header_bytes = header_bytes;
  rules.too_small =
      what + " is damaged (its creator died while creating it); remove it with `hakobu rm " + std::string(name) + "`";
  rules.removed = what + " was removed";
  return rules;
}

Error<OpenError> layout_mismatch(const std::string& what, std::uint32_t found, std::uint32_t known) {
  return {OpenError::Incompatible,
          what + " has layout version " + std::to_string(found) + ", this library knows " + std::to_string(known)};
}

Result<void, UnlinkError> remove_unopenable(const Error<OpenError>& failed, const DomainOptions& domain,
                                            const std::string& suffix) {
  switch (failed.code) {
    case OpenError::NotFound: return {UnlinkError::NotFound, failed.message};
    case OpenError::InvalidName: return {UnlinkError::InvalidName, failed.message};
    case OpenError::PermissionDenied: return {UnlinkError::PermissionDenied, failed.message};
    case OpenError::Corrupt: break;
    default: return {UnlinkError::SystemError, failed.message};
  }
  auto state = DomainState::attach(domain);
  if (!state) return {UnlinkError::SystemError, state.error().message};
  if (auto r = platform::shm_remove((*state)->file_name(suffix)); !r) {
    return {UnlinkError::SystemError, r.error().message};
  }
  return {};
}

Result<InspectedFile, OpenError> open_for_inspection(std::string_view kind, std::string_view prefix,
                                                     std::string_view name, std::string_view domain,
                                                     std::uint64_t min_bytes) {
  if (auto why = validate_name(name); !why.empty()) {
    return {OpenError::InvalidName, "invalid " + std::string(kind) + " name '" + std::string(name) + "': " + why};
  }
  DomainOptions options;
  options.name = std::string(domain);
  options.collect_on_attach = false;  // a report shows dead processes; it does not reclaim them
  auto state = DomainState::attach(options);
  if (!state) return std::move(state).error();
  InspectedFile out;
  out.domain = std::move(*state);
  out.what = std::string(kind) + " '" + std::string(name) + "'";
  out.damaged = out.what + " is damaged; remove it with `hakobu rm " + std::string(name) + "`";
  const DomainFile file{out.domain->file_name(std::string(prefix) + std::string(name)), true, out.what};
  auto fd = open_domain_file(file, false);  // checks owner and mode before a byte is read
  if (!fd) {
    if (fd.error().code == OpenError::NotFound) {
      return {OpenError::NotFound, "no " + out.what + " in domain '" + out.domain->name() + "'"};
    }
    return std::move(fd).error();
  }
  auto info = platform::file_info(*fd);
  if (!info || info->size < min_bytes) {
    platform::close_fd(*fd);
    return info ? Error<OpenError>{OpenError::Corrupt, out.damaged} : to_open_error(info);
  }
  out.fd = *fd;
  out.size = info->size;
  return out;
}

}  // namespace hakobu::detail
