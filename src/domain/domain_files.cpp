// hakobu — the files of domains, by name (see hakobu/domain_files.hpp).
#include "hakobu/domain_files.hpp"

#include <algorithm>
#include <set>
#include <utility>

#include "hakobu/domain.hpp"
#include "platform/os.hpp"

namespace hakobu {
namespace {

// The kind words of the names: hakobu:D:<word>[:rest].
constexpr std::string_view kRegistryWord = "registry";
constexpr std::string_view kHeapWord = "heap";
constexpr std::string_view kQueueWord = "q";
constexpr std::string_view kStoreWord = "st";
constexpr std::string_view kSyncWord = "s";
constexpr std::string_view kTopicWord = "t";
constexpr std::string_view kNewQueueWord = "new";

bool valid(std::string_view name) {
  return validate_name(name).empty();
}

// The position of a file in the removal order of list_domain_files.
int removal_rank(FileKind kind) {
  switch (kind) {
    case FileKind::Queue:
    case FileKind::Store:
    case FileKind::Sync:
    case FileKind::Topic: return 0;
    case FileKind::NewQueue:
    case FileKind::Other: return 1;
    case FileKind::HugeHeap: return 2;
    case FileKind::Heap: return 3;
    case FileKind::Registry: return 4;
  }
  return 1;
}

}  // namespace

std::string_view to_string(FileKind kind) noexcept {
  switch (kind) {
    case FileKind::Registry: return "registry";
    case FileKind::Heap: return "heap";
    case FileKind::HugeHeap: return "huge_heap";
    case FileKind::Queue: return "queue";
    case FileKind::NewQueue: return "new_queue";
    case FileKind::Other: return "other";
    case FileKind::Store: return "store";
    case FileKind::Sync: return "sync";
    case FileKind::Topic: return "topic";
  }
  return "other";
}

std::optional<FileName> parse_file_name(std::string_view file_name) {
  if (file_name.substr(0, kFileNamePrefix.size()) != kFileNamePrefix) return std::nullopt;
  std::string_view rest = file_name.substr(kFileNamePrefix.size());
  const auto domain_end = rest.find(':');
  if (domain_end == std::string_view::npos || !valid(rest.substr(0, domain_end))) return std::nullopt;
  FileName out;
  out.domain = std::string(rest.substr(0, domain_end));
  rest.remove_prefix(domain_end + 1);
  const auto word_end = rest.find(':');
  const std::string_view word = rest.substr(0, word_end);
  const std::string_view after = word_end == std::string_view::npos ? std::string_view() : rest.substr(word_end + 1);
  if (word_end == std::string_view::npos && word == kRegistryWord) {
    out.kind = FileKind::Registry;
  } else if (word_end == std::string_view::npos && word == kHeapWord) {
    out.kind = FileKind::Heap;
  } else if (word == kQueueWord && word_end != std::string_view::npos && valid(after)) {
    out.kind = FileKind::Queue;
    out.name = std::string(after);
  } else if (word == kStoreWord && word_end != std::string_view::npos && valid(after)) {
    out.kind = FileKind::Store;
    out.name = std::string(after);
  } else if (word == kSyncWord && word_end != std::string_view::npos && valid(after)) {
    out.kind = FileKind::Sync;
    out.name = std::string(after);
  } else if (word == kTopicWord && word_end != std::string_view::npos && valid(after)) {
    out.kind = FileKind::Topic;
    out.name = std::string(after);
  } else if (word == kNewQueueWord && after.find(':') != std::string_view::npos &&
             valid(after.substr(0, after.find(':')))) {
    out.kind = FileKind::NewQueue;
    out.name = std::string(after.substr(0, after.find(':')));
  } else {
    out.kind = FileKind::Other;
    out.name = std::string(rest);
  }
  return out;
}

std::string file_name(std::string_view domain, FileKind kind, std::string_view name) {
  if (!valid(domain)) return {};
  const std::string prefix = Domain::file_prefix(domain);
  switch (kind) {
    case FileKind::Registry: return prefix + std::string(kRegistryWord);
    case FileKind::Heap:
    case FileKind::HugeHeap: return prefix + std::string(kHeapWord);
    case FileKind::Queue:
      return valid(name) ? prefix + std::string(kQueueWord) + ":" + std::string(name) : std::string();
    case FileKind::Store:
      return valid(name) ? prefix + std::string(kStoreWord) + ":" + std::string(name) : std::string();
    case FileKind::Sync: return valid(name) ? prefix + std::string(kSyncWord) + ":" + std::string(name) : std::string();
    case FileKind::Topic:
      return valid(name) ? prefix + std::string(kTopicWord) + ":" + std::string(name) : std::string();
    case FileKind::NewQueue:
    case FileKind::Other: return {};
  }
  return {};
}

std::vector<DomainFile> list_domain_files(std::string_view domain) {
  std::vector<DomainFile> files;
  if (!valid(domain)) return files;
  const std::string prefix = Domain::file_prefix(domain);
  const auto add = [&](const std::string& directory, bool huge) {
    for (const auto& entry : platform::list_directory(directory, prefix)) {
      auto parsed = parse_file_name(entry);
      if (!parsed || parsed->domain != domain) continue;
      // A hugetlbfs mount holds only heaps: whatever else is there of ours is unknown.
      FileKind kind = parsed->kind;
      if (huge) kind = kind == FileKind::Heap ? FileKind::HugeHeap : FileKind::Other;
      std::string name = kind == FileKind::Other && parsed->kind != FileKind::Other ? entry.substr(prefix.size())
                                                                                    : std::move(parsed->name);
      std::string path = directory;
      path += '/';
      path += entry;
      files.push_back({std::move(path), kind, std::move(name)});
    }
  };
  add(std::string(platform::shm_directory()), false);
  std::set<std::string> seen;  // a mount point listed twice (mounted over itself) is read once
  for (const auto& mount : platform::hugetlbfs_mount_points()) {
    if (seen.insert(mount.path).second) add(mount.path, true);
  }
  std::stable_sort(files.begin(), files.end(), [](const DomainFile& a, const DomainFile& b) {
    const int ra = removal_rank(a.kind);
    const int rb = removal_rank(b.kind);
    return ra != rb ? ra < rb : a.path < b.path;
  });
  return files;
}

std::vector<std::string> list_domains() {
  std::set<std::string> names;
  const auto add = [&](const std::string& directory) {
    for (const auto& entry : platform::list_directory(directory, kFileNamePrefix)) {
      if (auto parsed = parse_file_name(entry)) names.insert(std::move(parsed->domain));
    }
  };
  add(std::string(platform::shm_directory()));
  for (const auto& mount : platform::hugetlbfs_mount_points()) add(mount.path);
  return {names.begin(), names.end()};
}

std::vector<HugetlbfsMount> hugetlbfs_mounts() {
  std::vector<HugetlbfsMount> out;
  for (auto& mount : platform::hugetlbfs_mount_points()) out.push_back({std::move(mount.path), mount.page_size});
  return out;
}

std::string shm_directory() {
  return std::string(platform::shm_directory());
}

}  // namespace hakobu
