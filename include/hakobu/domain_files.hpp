// hakobu — the files of domains, by name: what an administration tool needs to
// find, list and remove them without attaching (attaching creates a domain that
// has no files, and reclaims what dead processes held).
//
// File names (in /dev/shm, and for the huge-page heap on a hugetlbfs mount):
//
//   hakobu:D:registry          the process table and the list of named objects
//   hakobu:D:heap              the shared heap (the same name on a hugetlbfs
//                              mount: its huge-page segment)
//   hakobu:D:q:NAME            queue NAME
//   hakobu:D:st:NAME           store NAME
//   hakobu:D:s:NAME            sync object NAME (a lock, an event...: the
//                              file's header says which; hakobu/inspect.hpp)
//   hakobu:D:t:NAME            topic NAME
//   hakobu:D:new:NAME:NONCE    a named object NAME being built, before it is
//                              published (a queue, store, sync object or topic)
//
// Domain and object names cannot contain ':', so a name splits in one way only.
// Nothing here opens a file: the names are all a listing goes by.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace hakobu {

/// What every file name of every domain starts with.
inline constexpr std::string_view kFileNamePrefix = "hakobu:";

/// What a file of a domain holds.
enum class FileKind : std::uint8_t {
  Registry,  ///< hakobu:D:registry
  Heap,      ///< hakobu:D:heap in /dev/shm
  HugeHeap,  ///< hakobu:D:heap on a hugetlbfs mount: the heap's huge-page segment
  Queue,     ///< hakobu:D:q:NAME
  NewQueue,  ///< hakobu:D:new:NAME:NONCE, a named object being built (or left by a creator that died building it)
  Other,     ///< a name of the domain this version does not know (a newer version's, or a stray file)
  Store,     ///< hakobu:D:st:NAME
  Sync,      ///< hakobu:D:s:NAME, a lock, an event or another sync object
  Topic,     ///< hakobu:D:t:NAME
};

/// "registry", "heap", "huge_heap", "queue", "new_queue", "other", "store", "sync" or "topic".
[[nodiscard]] std::string_view to_string(FileKind kind) noexcept;

/// A file name taken apart.
struct FileName {
  std::string domain;
  FileKind kind = FileKind::Other;
  /// The object's name for Queue, Store, Sync, Topic and NewQueue; what follows the domain for Other; else empty.
  std::string name;
};

/// Takes apart the name (not the path) of a file. Empty when it is no file of
/// a domain: no "hakobu:" prefix, or no valid domain name after it. The heap's
/// name parses as Heap; only its directory tells the huge-page segment apart.
[[nodiscard]] std::optional<FileName> parse_file_name(std::string_view file_name);

/// The name of the file of `kind` of `domain` (for Queue, Store, Sync and Topic: of object `name`).
/// NewQueue and Other have no single name and give an empty string, as does
/// an invalid domain or queue name.
[[nodiscard]] std::string file_name(std::string_view domain, FileKind kind, std::string_view name = {});

/// One file of a domain, found by name.
struct DomainFile {
  std::string path;  ///< absolute
  FileKind kind = FileKind::Other;
  std::string name;  ///< as FileName::name
};

/// Every file of `domain` in /dev/shm and on every hugetlbfs mount, in the
/// order a removal of the whole domain takes them: named objects (queues,
/// stores, sync objects, topics, by path), objects being built and unknown files, then the huge-page heap, the heap,
/// and the registry last (while it exists, a process attaching finds the domain rather than creating a new one among
/// leftovers). Empty for an invalid name; directories that cannot be read hold nothing of ours.
[[nodiscard]] std::vector<DomainFile> list_domain_files(std::string_view domain);

/// The names of the domains that have at least one file, sorted.
[[nodiscard]] std::vector<std::string> list_domains();

/// A mounted hugetlbfs file system (where a domain's huge-page heap can live).
struct HugetlbfsMount {
  std::string path;
  std::uint64_t page_size = 0;  ///< bytes; 0 if neither the mount nor the system says
};

/// Every hugetlbfs mount, of any page size, as /proc/mounts lists them.
/// A domain created without a hugetlbfs directory uses those of the default
/// huge-page size only.
[[nodiscard]] std::vector<HugetlbfsMount> hugetlbfs_mounts();

/// The directory of shared-memory files ("/dev/shm").
[[nodiscard]] std::string shm_directory();

}  // namespace hakobu
