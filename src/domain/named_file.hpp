// hakobu — a named object's file: one protocol to create, attach and close it.
//
// Queues, stores and sync objects are each one file of the domain
// (/dev/shm/hakobu:D:<kind>:NAME). They share how such a file is made, opened
// and let go of; this class is that protocol, written once. An object's own
// file comment gives its layout and points here for the rest.
//
// Creating
// --------
//   1. The file is made exclusively (mode 0600) under a temporary, unguessable
//      name (DomainState::temporary_file_name), never under its own name.
//   2. It is backed with memory (platform::allocate: ENOSPC now, not SIGBUS
//      later) and mapped; it reads as zeros.
//   3. The caller writes its header and storing the magic is the caller's last
//      write, with release: whoever reads the magic with acquire sees the rest.
//   4. With lock bytes: the creator takes its shared lifecycle lock.
//   5. DomainState::publish_file link()s it under its name, which fails with
//      AlreadyExists if another creator was first; the temporary name goes
//      either way. An opener thus sees a whole object under the name or none.
//   Any failure discards the file (temporary name removed, mapping and
//   descriptor gone, which drops any lock taken through it).
//
// Attaching (the file as found under its name is untrusted)
// ---------
//   1. With lock bytes: a shared lock on the init byte. It excludes only the
//      last handle of an unlinked object while that one drains it (below).
//   2. file_info: no links left -> NotFound ("... was removed"; the opener looks
//      again); shorter than the header -> Corrupt (the `hakobu rm` hint).
//   3. The header alone is mapped and checked by the caller (magic with
//      acquire, layout version, sizes against the file's size), which names the
//      whole size to map; the mapping is then replaced by one of that size.
//   4. The caller says whether the object was unlinked meanwhile (NotFound).
//   5. With lock bytes: the shared lifecycle lock is taken, then the init
//      lock let go.
//   Any failure unmaps and closes the file: the handle is empty again.
//
// Closing (with lock bytes)
// -------
//   The exclusive init lock is taken (no attach can be between its steps 1 and
//   5), the handle's own shared lifecycle lock let go, and an exclusive
//   lifecycle lock tried: granted means no other handle is attached, anywhere.
//   That last one out runs the caller's `last_out` (an unlinked object's drain:
//   the heap references its file still holds), still under the init lock, so a
//   new attacher waits until it is done and then finds the file unlinked.
//
// The locks are open-file-description locks (platform/os.hpp): the kernel drops
// them when a holder dies, so a killed process never keeps an object alive
// or blocks its drain. Without lock bytes (sync objects) the file is only
// created and checked the same way; its descriptor may be closed after
// mapping (close_descriptor) and the object lives until it is removed.
//
// fork(): the descriptor is closed in the child (close_after_fork) and, for a
// file with lock bytes, the mapping is not inherited (keep_from_children: it
// would hold the file and its lifecycle lock), so a handle inherited across a
// fork releases nothing: it is the parent's. A file without locks stays mapped
// in the child (its handles may still read it) and is unmapped there.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "domain/domain_state.hpp"
#include "hakobu/error.hpp"
#include "hakobu/queue.hpp"

namespace hakobu::detail {

class NamedFile {
 public:
  /// Byte offsets of the init and lifecycle locks on the file.
  struct LockBytes {
    std::uint64_t init = 0;
    std::uint64_t lifecycle = 1;
  };
  /// What attach checks, besides what every named file must pass.
  struct AttachRules {
    std::uint64_t header_bytes = 0;  ///< mapped first; a shorter file is Corrupt
    std::string too_small;           ///< the Corrupt message for a file shorter than its header
    std::string removed;             ///< the NotFound message ("queue 'q' was removed")
    /// Checks the mapped header (file_size: the file's) and returns the bytes of
    /// the whole mapping, or the error to report.
    std::function<Result<std::uint64_t, OpenError>(const std::byte* header, std::uint64_t file_size)> check_header;
    /// True when the whole mapping says the object was unlinked (may be empty).
    std::function<bool(const std::byte* base)> unlinked;
  };

  /// Attach rules with every named object's messages filled in for `what`
  /// ("queue 'q'") of name `name` (the `hakobu rm` hint), and `header_bytes`;
  /// the caller adds check_header and unlinked.
  static AttachRules rules_for(const std::string& what, std::string_view name, std::uint64_t header_bytes);

  explicit NamedFile(std::optional<LockBytes> locks) noexcept : locks_(locks) {}
  /// Unmaps and closes without the closing protocol (see close()); nothing in a forked child.
  ~NamedFile();
  NamedFile(const NamedFile&) = delete;
  NamedFile& operator=(const NamedFile&) = delete;

  /// Opens the existing file (owner and mode checked before a byte is read).
  Result<void, OpenError> open(const DomainFile& file);
  /// Creating, steps 1-5. `write_header` gets the zeroed mapping of `bytes`
  /// and stores the magic last, with release. `what` names the object in
  /// messages ("queue 'q'"); `object_name` makes the temporary name;
  /// `taken_what`, if given, names it in the AlreadyExists message instead
  /// (a name that may be taken by an object of another kind).
  Result<void, OpenError> create(DomainState& domain, std::string_view object_name, const std::string& file,
                                 std::string_view what, std::uint64_t bytes,
                                 const std::function<void(std::byte* base)>& write_header,
                                 std::string_view taken_what = {});
  /// Attaching, steps 1-5, on the file open()ed.
  Result<void, OpenError> attach(const AttachRules& rules);
  /// Closing: `last_out` runs when this was the last attached handle. Then unmaps and closes.
  void close(const std::function<void()>& last_out) noexcept;
  /// Closes the descriptor, keeping the mapping (a file whose locks are not used).
  void close_descriptor() noexcept;

  [[nodiscard]] std::byte* base() const noexcept { return base_; }
  [[nodiscard]] std::uint64_t bytes() const noexcept { return bytes_; }
  [[nodiscard]] int fd() const noexcept { return fd_; }
  /// Holds its shared lifecycle lock (created or attached, not yet closed).
  [[nodiscard]] bool attached() const noexcept { return attached_; }

 private:
  Result<void, OpenError> map(std::uint64_t bytes);
  void release() noexcept;

  std::optional<LockBytes> locks_;
  int fd_ = -1;
  std::byte* base_ = nullptr;
  std::uint64_t bytes_ = 0;
  bool attached_ = false;
  std::uint32_t epoch_ = 0;  // fork_epoch() when opened or created
};

/// Opening by mode, for every named object: attach first (create-or-attach of
/// an existing object then costs an open and a map, and never needs room for
/// a second one), else create with `create()`. An object removed while we
/// attached, or created by another process while we created, makes it look
/// again (at most 100 times). `attach()` runs on `named` once open()ed;
/// `not_found` is the AttachOnly message.
template <class Attach, class Create>
Result<void, OpenError> open_by_mode(NamedFile& named, const DomainFile& file, OpenMode mode,
                                     const std::string& not_found, Attach&& attach, Create&& create) {
  for (int attempt = 0; attempt < 100; ++attempt) {
    if (mode != OpenMode::CreateExclusive) {
      auto opened = named.open(file);
      if (opened) {
        auto attached = attach();
        if (attached || attached.error().code != OpenError::NotFound || mode == OpenMode::AttachOnly) return attached;
        continue;  // removed while we attached: look again
      }
      if (opened.error().code != OpenError::NotFound) return opened;
      if (mode == OpenMode::AttachOnly) return {OpenError::NotFound, not_found};
    }
    auto created = create();
    if (created || created.error().code != OpenError::AlreadyExists || mode == OpenMode::CreateExclusive) {
      return created;
    }
  }
  return {OpenError::SystemError, file.what + " is being created and removed too often"};
}

/// The Incompatible error of a file of another layout version: "`what` has
/// layout version `found`, this library knows `known`".
Error<OpenError> layout_mismatch(const std::string& what, std::uint32_t found, std::uint32_t known);

/// What `remove(name)` (`hakobu rm`) does when attaching to the object failed
/// with `failed`: NotFound, InvalidName and PermissionDenied are reported as
/// such; a damaged file (Corrupt), which nothing can open, is removed (one of
/// another layout version is not: a newer library's object may be in use) — the file `suffix` ("q:NAME") of the domain
/// `domain`; anything else is a SystemError.
Result<void, UnlinkError> remove_unopenable(const Error<OpenError>& failed, const DomainOptions& domain,
                                            const std::string& suffix);

/// A named object's file opened for a tool that only reads it (`hakobu info`):
/// no lock is taken and no slot of the object; the domain is attached without
/// reclaiming dead processes (a report shows them).
struct InspectedFile {
  std::shared_ptr<DomainState> domain;
  int fd = -1;             ///< the caller closes it
  std::uint64_t size = 0;  ///< the file's size when opened
  std::string what;        ///< "store 'x'": the object in messages
  std::string damaged;     ///< the Corrupt message, with the `hakobu rm` hint
};

/// Opens the file `prefix` + `name` (e.g. "st:" and a store's name) of
/// `domain` (empty: the default), owner and mode checked before a byte is
/// read; `kind` names the object ("store"). InvalidName, NotFound ("no store
/// 'x' in domain 'd'"), or Corrupt for a file shorter than `min_bytes`.
Result<InspectedFile, OpenError> open_for_inspection(std::string_view kind, std::string_view prefix,
                                                     std::string_view name, std::string_view domain,
                                                     std::uint64_t min_bytes);

}  // namespace hakobu::detail
