// hakobu — a process's attachment to a domain (rules in domain_state.hpp).
#include "domain/domain_state.hpp"

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cstdlib>
#include <cstring>
#include <map>
#include <new>
#include <set>

#include "channel/message_access.hpp"
#include "platform/os.hpp"
#include "support/kill_point.hpp"

namespace hakobu::detail {
namespace {

std::atomic<std::uint32_t> g_fork_epoch{0};

// Descriptors whose locks say "this process is alive" (registries and
// queues), closed in a forked child: the child must not keep its parent's
// liveness and lifecycle locks, which belong to the open file, alive.
//
// Fork locking rules: before fork() takes g_domains_mutex then g_fork_fds_mutex
// (in that order, like every other holder of both), so the child inherits
// neither locked and a consistent set; its handler closes the set and empties it.
std::mutex g_fork_fds_mutex;
std::set<int>& fork_fds() {
  static auto* fds = new std::set<int>();  // never destroyed: used at exit
  return *fds;
}

// Held by attach/detach bookkeeping; never across a destructor of DomainState
// (which takes it too).
std::mutex g_domains_mutex;

void before_fork() {
  g_domains_mutex.lock();
  g_fork_fds_mutex.lock();
}
void after_fork_in_parent() {
  g_fork_fds_mutex.unlock();
  g_domains_mutex.unlock();
}

void after_fork_in_child() {
  g_fork_epoch.fetch_add(1, std::memory_order_relaxed);
  for (const int fd : fork_fds()) platform::close_fd(fd);
  fork_fds().clear();
  g_fork_fds_mutex.unlock();  // plain mutexes: the child's thread may unlock them
  g_domains_mutex.unlock();
}

// Once per process, before the first attachment.
void install_fork_handlers() noexcept {
  static const bool installed = [] {
    platform::on_fork(&before_fork, &after_fork_in_parent, &after_fork_in_child);
    return true;
  }();
  (void)installed;
}

std::map<std::string, std::weak_ptr<DomainState>>& domains() {
  static auto* map = new std::map<std::string, std::weak_ptr<DomainState>>();  // never destroyed: used at exit
  return *map;
}

// Heap segments start on this boundary (the largest huge page we use).
constexpr std::uint64_t kSegmentAlignment = std::uint64_t{2} << 20;

std::uint64_t default_cache_limit() {
  if (auto space = platform::space_info(std::string(platform::shm_directory()))) return space->total / 4;
  return std::uint64_t{1} << 30;
}

}  // namespace

void close_after_fork(int fd) noexcept {
  install_fork_handlers();
  std::lock_guard guard(g_fork_fds_mutex);
  fork_fds().insert(fd);
}

void keep_after_fork(int fd) noexcept {
  std::lock_guard guard(g_fork_fds_mutex);
  fork_fds().erase(fd);
}

std::string DomainFile::path() const {
  return shm ? std::string(platform::shm_directory()) + "/" + name : name;
}

Result<int, OpenError> open_domain_file(const DomainFile& file, bool create) {
  const auto open = [&](int flags) {
    return file.shm ? platform::shm_open_file(file.name, flags, 0600) : platform::open_path(file.name, flags, 0600);
  };
  if (create) {
    auto fd = open(O_RDWR | O_CREAT | O_EXCL);
    if (!fd) return to_open_error(fd);
    // Created files are the user's alone, whatever the umask (0277 would make
    // them read-only, and the user's other processes could not attach).
    if (auto r = platform::set_mode(*fd, 0600); !r) {
      platform::close_fd(*fd);
      return to_open_error(r);
    }
    return *fd;
  }
  auto fd = open(O_RDWR);
  if (!fd && fd.error().code != EACCES && fd.error().code != EPERM) return to_open_error(fd);
  // Checked before any lock is taken on it or any byte read: a file another
  // user planted must not make us wait on its lock or trust its contents.
  auto info = fd ? platform::file_info(*fd) : platform::path_info(file.path());
  if (!info) {
    if (fd) platform::close_fd(*fd);
    return to_open_error(info);
  }
  const uid_t me = platform::user_id();
  std::string problem;
  if (info->owner != me) {
    problem = " belongs to user " + platform::user_name(info->owner) + ", not to you (" + platform::user_name(me) +
              "): another user created a file in its place, perhaps to lock you out. Use another domain "
              "(HAKOBU_DOMAIN=NAME, or the domain option), or ask that user or root to remove it";
  } else if ((info->mode & 0077) != 0 || !fd) {
    char mode[8];
    (void)std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(info->mode & 07777));
    problem = std::string(" has mode ") + mode +
              (fd ? ": other users may read or change it, so it cannot be trusted"
                  : ", which does not let you open it for writing") +
              ". Remove it (`hakobu rm --domain D --everything` for a domain) and open again";
  }
  if (!problem.empty()) {
    if (fd) platform::close_fd(*fd);
    return {OpenError::PermissionDenied, std::string(file.what) + " (" + file.path() + ")" + problem + "."};
  }
  return *fd;
}

void remove_if_same(const DomainFile& file, int fd) noexcept {
  auto mine = platform::file_info(fd);
  auto named = platform::path_info(file.path());
  if (!mine || !named || mine->inode != named->inode) return;
  if (file.shm) {
    (void)platform::shm_remove(file.name);
  } else {
    (void)platform::remove_path(file.name);
  }
}

OpenError open_error_from_errno(int err) noexcept {
  switch (err) {
    case ENOENT: return OpenError::NotFound;
    case EEXIST: return OpenError::AlreadyExists;
    case EACCES:
    case EPERM: return OpenError::PermissionDenied;
    case ENOSPC:
    case ENOMEM: return OpenError::OutOfMemory;
    default: return OpenError::SystemError;
  }
}

std::uint32_t fork_epoch() noexcept {
  return g_fork_epoch.load(std::memory_order_relaxed);
}

std::string DomainState::file_name(std::string_view suffix) const {
  // ':' cannot appear in names, so no domain or queue name can make one
  // domain's file look like another's.
  return Domain::file_prefix(name_) + std::string(suffix);
}

std::string DomainState::temporary_file_name(std::string_view object_name) const {
  char nonce[40];
  (void)std::snprintf(nonce, sizeof nonce, "%016llx%016llx", static_cast<unsigned long long>(platform::random_u64()),
                      static_cast<unsigned long long>(platform::random_u64()));
  return file_name("new:" + std::string(object_name) + ":" + nonce);
}

Result<void, OpenError> DomainState::publish_file(const std::string& temporary, const std::string& file,
                                                  std::string_view what) const {
  auto linked = platform::shm_link(temporary, file);
  (void)platform::shm_remove(temporary);
  if (linked) return {};
  auto error = to_open_error(linked);
  if (error.code == OpenError::AlreadyExists) {
    error.message = std::string(what) + " already exists in domain '" + name_ + "'";
  }
  return error;
}

Result<std::shared_ptr<DomainState>, OpenError> DomainState::attach(const DomainOptions& options) {
  std::string name = options.name.empty() ? default_domain_name() : options.name;
  if (auto why = validate_name(name); !why.empty()) {
    return {OpenError::InvalidName, "invalid domain name '" + name + "': " + why};
  }
  if (options.heap_capacity < (std::uint64_t{1} << 24) || options.heap_capacity > kMaxHeapCapacity) {
    return {OpenError::InvalidArgument, "heap_capacity must be between 16 MiB and 64 TiB"};
  }
  // Declared before the lock: states dropped here are destroyed after it is
  // released (their destructor takes it).
  std::shared_ptr<DomainState> dropped;
  std::lock_guard guard(g_domains_mutex);
  if (auto it = domains().find(name); it != domains().end()) {
    auto existing = it->second.lock();
    if (existing && !existing->forked_away()) return existing;
    dropped = std::move(existing);
  }
  install_fork_handlers();
  std::shared_ptr<DomainState> state(new DomainState());
  state->name_ = name;
  state->epoch_ = fork_epoch();
  auto failed = [&](Error<OpenError> error) -> Result<std::shared_ptr<DomainState>, OpenError> {
    dropped = std::move(state);
    return error;
  };
  if (auto r = state->open_files(options); !r) return failed(std::move(r).error());
  if (auto r = state->take_slot(); !r) return failed(std::move(r).error());
  if (options.collect_on_attach) state->collect_garbage();
  domains()[name] = state;
  return state;
}

Result<void, OpenError> DomainState::open_files(const DomainOptions& options) {
  const std::string what = "the registry of domain '" + name_ + "'";
  const DomainFile registry{file_name("registry"), true, what};
  for (int attempt = 0; attempt < 100; ++attempt) {
    auto fd = open_domain_file(registry, true);
    if (!fd && fd.error().code == OpenError::AlreadyExists) {
      fd = open_domain_file(registry, false);                       // checks owner and mode before we lock it
      if (!fd && fd.error().code == OpenError::NotFound) continue;  // removed meanwhile: try again
    }
    if (!fd) return std::move(fd).error();
    registry_fd_ = *fd;
    close_after_fork(registry_fd_);

    // Serialize with creators and destroyers, then make sure the file we hold
    // is still the one with the name (a destroyer may have removed it).
    if (auto locked = platform::lock_byte(registry_fd_, kInitLockByte, true); !locked) return to_open_error(locked);
    auto info = platform::file_info(registry_fd_);
    if (!info) return to_open_error(info);
    if (info->links == 0) {
      platform::unlock_byte(registry_fd_, kInitLockByte);
      keep_after_fork(registry_fd_);
      platform::close_fd(registry_fd_);
      registry_fd_ = -1;
      continue;
    }
    auto ready = initialize(options);
    if (ready) {
      if (auto shared = platform::lock_byte(registry_fd_, kLifecycleLockByte, false); shared) {
        attached_ = true;
      } else {
        ready = to_open_error(shared);
      }
    }
    platform::unlock_byte(registry_fd_, kInitLockByte);
    return ready;
  }
  return {OpenError::SystemError, "domain '" + name_ + "' is being created and removed too often to attach"};
}

// Called with the init lock held exclusively. Whether the registry needs
// initializing is decided by its magic: 0 means nobody finished (a fresh file,
// or a creator that failed or died half-way), which we may redo.
Result<void, OpenError> DomainState::initialize(const DomainOptions& options) {
  constexpr std::uint64_t kRegistryBytes = sizeof(RegistryHeader);
  auto info = platform::file_info(registry_fd_);
  if (!info) return to_open_error(info);
  if (info->size < kRegistryBytes) {
    // Backed with fallocate: a full /dev/shm is an error here, not a SIGBUS later.
    if (auto r = platform::allocate(registry_fd_, 0, kRegistryBytes); !r) return abandon(to_open_error(r));
  }
  auto mapped = platform::map_shared(registry_fd_, kRegistryBytes);
  if (!mapped) return to_open_error(mapped);
  registry_ = static_cast<RegistryHeader*>(*mapped);
  // A child of fork() must not hold the registry (and this process's liveness lock) through the mapping.
  platform::keep_from_children(registry_, kRegistryBytes);
  const std::uint64_t magic = registry_->magic.load(std::memory_order_acquire);
  if (magic == 0) {
    if (auto r = create_registry(options); !r) return abandon(std::move(r).error());
  } else if (magic != kRegistryMagic) {
    return {OpenError::Corrupt, "domain '" + name_ + "' has a damaged registry; remove it with `hakobu rm --domain " +
                                    name_ + " --everything`"};
  } else if (auto r = open_registry(); !r) {
    if (r.error().code != OpenError::NotFound || !nobody_attached()) return r;
    // The last process died between removing the heap and the registry (or
    // someone removed the heap by hand) and nobody is attached: start afresh.
    platform::close_fd(huge_fd_);
    huge_fd_ = -1;
    platform::close_fd(heap_fd_);
    heap_fd_ = -1;
    if (auto c = create_registry(options); !c) return abandon(std::move(c).error());
  }
  if (auto r = map_page_map(); !r) return r;
  return map_heap();
}

// The page map follows the header in the registry file; its size follows from
// the heap's, which was checked already.
Result<void, OpenError> DomainState::map_page_map() {
  const std::uint64_t words[2] = {
      page_map_words(registry_->heap_capacity, platform::page_size()),
      registry_->huge_capacity != 0 ? page_map_words(registry_->huge_capacity, registry_->huge_page_size) : 0};
  if (registry_->page_map_offset != page_map_offset() || registry_->page_map_words[0] != words[0] ||
      registry_->page_map_words[1] != words[1]) {
    return {OpenError::Corrupt, "domain '" + name_ + "' has an invalid page map; remove it with `hakobu rm --domain " +
                                    name_ + " --everything`"};
  }
  page_map_bytes_ = (words[0] + words[1]) * sizeof(std::uint64_t);
  auto info = platform::file_info(registry_fd_);
  if (!info) return to_open_error(info);
  if (info->size < page_map_offset() + page_map_bytes_) {
    return {OpenError::Corrupt, "domain '" + name_ + "' has a truncated registry; remove it with `hakobu rm --domain " +
                                    name_ + " --everything`"};
  }
  auto mapped = platform::map_shared(registry_fd_, page_map_bytes_, page_map_offset());
  if (!mapped) return to_open_error(mapped);
  page_map_ = *mapped;
  platform::keep_from_children(page_map_, page_map_bytes_);
  return {};
}

// Called with the init lock held: true when no process holds the domain open.
bool DomainState::nobody_attached() const noexcept {
  auto alone = platform::try_lock_byte(registry_fd_, kLifecycleLockByte, true);
  if (!alone || !*alone) return false;
  platform::unlock_byte(registry_fd_, kLifecycleLockByte);
  return true;
}

// Removes what a failed initialization left, so the next attach starts afresh.
Error<OpenError> DomainState::abandon(Error<OpenError> error) {
  if (huge_fd_ >= 0 && registry_ != nullptr) (void)platform::remove_path(huge_file_path());
  (void)platform::shm_remove(file_name("heap"));
  (void)platform::shm_remove(file_name("registry"));
  return error;
}

Result<void, OpenError> DomainState::create_registry(const DomainOptions& options) {
  std::memset(static_cast<void*>(registry_), 0, sizeof(RegistryHeader));
  registry_->layout_version = kLayoutVersion;
  registry_->max_processes = kMaxProcesses;
  registry_->file_bytes = sizeof(RegistryHeader);
  registry_->heap_capacity = (options.heap_capacity + kSegmentAlignment - 1) / kSegmentAlignment * kSegmentAlignment;
  registry_->cache_limit = options.cache_limit != 0 ? options.cache_limit : default_cache_limit();
  registry_->heap_top.store(kHeapStart, std::memory_order_relaxed);
  const std::string heap_name = file_name("heap");
  (void)platform::shm_remove(heap_name);  // a stale heap of a dead domain
  auto heap_fd = open_domain_file({heap_name, true, "the heap of domain '" + name_ + "'"}, true);
  if (!heap_fd) return std::move(heap_fd).error();
  heap_fd_ = *heap_fd;
  if (auto r = platform::allocate(heap_fd_, 0, kHeapStart); !r) return to_open_error(r);
  if (options.huge_pages != HugePages::Never) {
    auto huge = create_huge_segment(options);
    if (!huge && options.huge_pages == HugePages::Require) return huge;
  }
  // The page map: sized for both segments now, its words backed as the heap grows.
  registry_->page_map_offset = page_map_offset();
  registry_->page_map_words[0] = page_map_words(registry_->heap_capacity, platform::page_size());
  registry_->page_map_words[1] =
      registry_->huge_capacity != 0 ? page_map_words(registry_->huge_capacity, registry_->huge_page_size) : 0;
  const std::uint64_t map_end =
      page_map_offset() + (registry_->page_map_words[0] + registry_->page_map_words[1]) * sizeof(std::uint64_t);
  if (auto r = platform::resize(registry_fd_, map_end); !r) return to_open_error(r);
  registry_->magic.store(kRegistryMagic, std::memory_order_release);
  return {};
}

Result<void, OpenError> DomainState::open_registry() {
  if (registry_->layout_version != kLayoutVersion) {
    return {OpenError::Incompatible, "domain '" + name_ + "' has layout version " +
                                         std::to_string(registry_->layout_version) + ", this library knows " +
                                         std::to_string(kLayoutVersion)};
  }
  // Everything below comes from shared memory: check it before trusting it.
  const std::uint64_t page = registry_->huge_page_size;
  if (registry_->max_processes != kMaxProcesses || registry_->heap_capacity > kMaxHeapCapacity ||
      registry_->heap_capacity < (std::uint64_t{1} << 24) || registry_->heap_capacity % kSegmentAlignment != 0 ||
      registry_->huge_capacity > kMaxHeapCapacity - registry_->heap_capacity ||
      (registry_->huge_capacity != 0 && (!std::has_single_bit(page) || page < 4096 || page > kSegmentAlignment ||
                                         registry_->huge_capacity % page != 0))) {
    return {OpenError::Corrupt, "domain '" + name_ + "' has an invalid registry header"};
  }
  auto heap_fd = open_domain_file({file_name("heap"), true, "the heap of domain '" + name_ + "'"}, false);
  if (!heap_fd) return std::move(heap_fd).error();
  heap_fd_ = *heap_fd;
  if (registry_->huge_capacity != 0) return open_huge_segment();
  return {};
}

std::string DomainState::huge_file_path() const {
  return std::string(registry_->huge_directory) + "/" + file_name("heap");
}

// Puts large blocks in reserved huge pages: a second heap file on a hugetlbfs mount.
Result<void, OpenError> DomainState::create_huge_segment(const DomainOptions& options) {
  const auto pool = platform::huge_page_info();
  const std::vector<std::string> directories = options.hugetlbfs_directory.empty()
                                                   ? platform::hugetlbfs_mounts()
                                                   : std::vector<std::string>{options.hugetlbfs_directory};
  if (pool.page_size == 0 || pool.page_size > kSegmentAlignment || pool.free_pages == 0 || directories.empty()) {
    return {OpenError::InvalidArgument,
            "huge pages were required but none can be used: reserve some (echo N > /proc/sys/vm/nr_hugepages) "
            "and mount hugetlbfs (mount -t hugetlbfs none /dev/hugepages)"};
  }
  // Free-list heads name offsets below kMaxHeapCapacity: both segments together stay below it.
  const std::uint64_t huge_capacity =
      std::min(registry_->heap_capacity, kMaxHeapCapacity - registry_->heap_capacity) / pool.page_size * pool.page_size;
  if (huge_capacity == 0) {
    return {OpenError::InvalidArgument, "a heap of 64 TiB leaves no room for a huge-page segment"};
  }
  std::string failures;
  for (const auto& directory : directories) {
    if (directory.empty() || directory.front() != '/' || directory.size() >= sizeof(registry_->huge_directory)) {
      continue;
    }
    const std::string path = directory + "/" + file_name("heap");
    (void)platform::remove_path(path);  // a stale heap of a dead domain
    auto fd = open_domain_file({path, false, "the huge-page heap of domain '" + name_ + "'"}, true);
    if (!fd) {
      failures += "; " + fd.error().message;
      continue;
    }
    if (!platform::on_hugetlbfs(*fd)) {
      platform::close_fd(*fd);
      (void)platform::remove_path(path);
      failures += "; " + directory + " is not hugetlbfs";
      continue;
    }
    huge_fd_ = *fd;
    std::memcpy(registry_->huge_directory, directory.c_str(), directory.size() + 1);
    registry_->huge_page_size = pool.page_size;
    registry_->huge_capacity = huge_capacity;
    registry_->huge_top.store(registry_->heap_capacity, std::memory_order_relaxed);
    return {};
  }
  return {OpenError::PermissionDenied, "no hugetlbfs mount could hold the heap" + failures};
}

Result<void, OpenError> DomainState::open_huge_segment() {
  // The directory comes from shared memory: it must be a NUL-terminated absolute path.
  const char* directory = registry_->huge_directory;
  const std::size_t length = ::strnlen(directory, sizeof(registry_->huge_directory));
  const std::string_view path_view(directory, length);
  if (length == sizeof(registry_->huge_directory) || path_view.empty() || path_view.front() != '/' ||
      path_view.find("..") != std::string_view::npos) {
    return {OpenError::Corrupt, "domain '" + name_ + "' names an invalid huge-page directory"};
  }
  auto fd = open_domain_file({huge_file_path(), false, "the huge-page heap of domain '" + name_ + "'"}, false);
  if (!fd) return std::move(fd).error();
  huge_fd_ = *fd;
  if (!platform::on_hugetlbfs(huge_fd_)) {
    return {OpenError::Corrupt, "domain '" + name_ + "' names a huge-page directory that is not hugetlbfs"};
  }
  return {};
}

// Maps both heap segments back to back in one reservation, aligned so that the
// huge-page segment starts on a huge-page boundary.
Result<void, OpenError> DomainState::map_heap() {
  heap_capacity_ = registry_->heap_capacity;
  const std::uint64_t huge_capacity = huge_fd_ >= 0 ? registry_->huge_capacity : 0;
  reservation_bytes_ = heap_capacity_ + huge_capacity + kSegmentAlignment;
  auto reserved = platform::reserve_address_space(reservation_bytes_);
  if (!reserved) return to_open_error(reserved);
  reservation_ = *reserved;
  const auto start = reinterpret_cast<std::uintptr_t>(reservation_);                               // NOLINT
  heap_base_ = reinterpret_cast<std::byte*>((start + kSegmentAlignment - 1) / kSegmentAlignment *  // NOLINT
                                            kSegmentAlignment);
  if (auto r = platform::map_shared_at(heap_base_, heap_fd_, heap_capacity_); !r) return to_open_error(r);
  platform::advise_huge_pages(heap_base_, heap_capacity_);
  HeapSegment shm{heap_fd_, 0, heap_capacity_, platform::page_size(), false};
  HeapSegment huge{};
  if (huge_capacity != 0) {
    if (auto r = platform::map_shared_at(heap_base_ + heap_capacity_, huge_fd_, huge_capacity); !r) {
      return to_open_error(r);
    }
    huge = HeapSegment{huge_fd_, heap_capacity_, huge_capacity, registry_->huge_page_size, true};
  }
  PageMap map{static_cast<std::atomic<std::uint64_t>*>(page_map_),
              {registry_->page_map_words[0], huge_capacity != 0 ? registry_->page_map_words[1] : 0},
              registry_fd_,
              page_map_offset()};
  heap_.bind(registry_, heap_base_, shm, huge, map);
  return {};
}

Result<void, OpenError> DomainState::take_slot() {
  // Round-robin, not lowest-first: each slot's generation then wraps only
  // after a million times the table's size in attaches (see make_token).
  const std::uint32_t first = registry_->next_slot.fetch_add(1, std::memory_order_relaxed) % kMaxProcesses;
  for (int pass = 0; pass < 2; ++pass) {
    for (std::uint32_t i = 0; i < kMaxProcesses; ++i) {
      const std::uint32_t s = (first + i) % kMaxProcesses;
      ProcessSlot& slot = registry_->processes[s];
      if (pass == 0 && slot.state.load(std::memory_order_acquire) != kSlotFree) continue;
      auto locked = platform::try_lock_byte(registry_fd_, kSlotLockBase + s, true);
      if (!locked) return to_open_error(locked);
      if (!*locked) continue;                                                        // a live process owns it
      if (slot.state.load(std::memory_order_acquire) != kSlotFree) reclaim_slot(s);  // its owner died
      slot_ = s;
      generation_ = slot.generation.load(std::memory_order_relaxed) + 1;
      slot.generation.store(generation_, std::memory_order_relaxed);
      slot.pid.store(platform::process_id(), std::memory_order_relaxed);
      slot.holdings.store(0, std::memory_order_relaxed);
      slot.holdings_capacity.store(0, std::memory_order_relaxed);
      slot.holdings_used.store(0, std::memory_order_relaxed);
      slot.state.store(kSlotActive, std::memory_order_release);
      has_slot_ = true;
      return {};
    }
  }
  return {OpenError::TooManyProcesses,
          "domain '" + name_ + "' has " + std::to_string(kMaxProcesses) + " live processes attached already"};
}

std::span<std::atomic<std::uint64_t>> DomainState::holdings_table(std::uint64_t table,
                                                                  std::uint64_t used) const noexcept {
  // Offset and count come from shared memory: the entries read must lie in
  // the table's block, in memory that is backed and inside the heap file.
  if (!heap_.check_block(table, 0)) return {};
  const std::uint64_t bytes = heap_.header(table)->payload_bytes.load(std::memory_order_relaxed);
  if (!heap_.check_block(table, bytes)) return {};
  return {reinterpret_cast<std::atomic<std::uint64_t>*>(heap_.payload(table)),  // NOLINT
          static_cast<std::size_t>(std::min(used, bytes / sizeof(std::uint64_t)))};
}

// Called with the slot's lock held by this process, its owner dead.
void DomainState::reclaim_slot(std::uint32_t s) noexcept {
  ProcessSlot& slot = registry_->processes[s];
  const std::uint64_t table = slot.holdings.load(std::memory_order_acquire);
  const std::uint64_t used = slot.holdings_used.load(std::memory_order_acquire);
  if (table != 0) {
    // Entries are emptied one by one while the table stays listed: a reclaimer
    // killed half-way leaves the rest to the next one (at most the one block
    // between an exchange and its drop leaks).
    for (auto& entry : holdings_table(table, used)) {
      const std::uint64_t block = entry.exchange(0, std::memory_order_acq_rel);
      if (block != 0 && block != table && heap_.check_block(block, 0)) heap_.drop_ref(block);
      kill_point("reclaim.dropped");
    }
  }
  // Unlist the table before freeing it: a reclaimer killed in between leaks
  // the table instead of leaving the slot pointing at a freed block.
  slot.holdings.store(0, std::memory_order_release);
  slot.holdings_capacity.store(0, std::memory_order_relaxed);
  slot.holdings_used.store(0, std::memory_order_relaxed);
  if (table != 0 && heap_.check_block(table, 0)) heap_.drop_ref(table);
  slot.pid.store(0, std::memory_order_relaxed);
  slot.state.store(kSlotFree, std::memory_order_release);
}

std::size_t DomainState::collect_garbage() {
  if (forked_away()) return 0;
  // Slot locks belong to the open file, which this process's threads share:
  // both would get the same dead slot's lock. One reclaimer per process.
  std::lock_guard guard(reclaim_mutex_);
  std::size_t reclaimed = 0;
  for (std::uint32_t s = 0; s < kMaxProcesses; ++s) {
    if (has_slot_ && s == slot_) continue;
    if (registry_->processes[s].state.load(std::memory_order_acquire) != kSlotActive) continue;
    auto locked = platform::try_lock_byte(registry_fd_, kSlotLockBase + s, true);
    if (!locked || !*locked) continue;
    if (registry_->processes[s].state.load(std::memory_order_acquire) == kSlotActive) {
      reclaim_slot(s);
      ++reclaimed;
    }
    platform::unlock_byte(registry_fd_, kSlotLockBase + s);
  }
  if (attached_) {
    if (auto alone = platform::try_lock_byte(registry_fd_, kLifecycleLockByte, true); alone && *alone) {
      // No other process is attached: the cache of free blocks serves nobody.
      heap_.trim_cache();
      (void)platform::lock_byte(registry_fd_, kLifecycleLockByte, false);  // back to shared, atomically
    }
  }
  return reclaimed;
}

bool DomainState::token_alive(std::uint32_t token) noexcept {
  const std::uint32_t s = token & ((1U << kTokenSlotBits) - 1);
  const std::uint32_t generation = (token >> kTokenSlotBits) & kTokenGenerationMask;
  if (s >= kMaxProcesses) return false;
  const ProcessSlot& slot = registry_->processes[s];
  if (slot.state.load(std::memory_order_acquire) != kSlotActive ||
      (slot.generation.load(std::memory_order_relaxed) & kTokenGenerationMask) != generation) {
    return false;
  }
  if (has_slot_ && s == slot_) return true;
  auto locked = platform::byte_locked_by_other(registry_fd_, kSlotLockBase + s);
  return !locked || *locked;  // if we cannot tell, assume alive (never reclaim the living)
}

Result<void, LoanError> DomainState::grow_holdings() {
  const std::uint64_t capacity = std::max<std::uint64_t>(256, holdings_capacity_ * 2);
  auto table = heap_.allocate(capacity * sizeof(std::uint64_t));
  if (!table) return std::move(table).error();
  auto* entries = reinterpret_cast<std::atomic<std::uint64_t>*>(heap_.payload(*table));  // NOLINT
  for (std::uint64_t i = 0; i < capacity; ++i) {
    entries[i].store(i < holdings_used_ ? holdings_[i].load(std::memory_order_relaxed) : 0, std::memory_order_relaxed);
  }
  ProcessSlot& slot = registry_->processes[slot_];
  const std::uint64_t old = slot.holdings.load(std::memory_order_relaxed);
  slot.holdings_capacity.store(capacity, std::memory_order_relaxed);
  slot.holdings.store(*table, std::memory_order_release);  // a reclaimer now reads the new table
  holdings_ = entries;
  holdings_capacity_ = capacity;
  if (old != 0) heap_.drop_ref(old);
  return {};
}

Result<std::uint32_t, LoanError> DomainState::reserve_holding() {
  if (left()) return {LoanError::Closed, "this process has left the domain (interpreter exit)"};
  if (const std::int64_t spare = spare_holding_.exchange(-1, std::memory_order_acquire); spare >= 0) {
    return static_cast<std::uint32_t>(spare);
  }
  std::lock_guard guard(holdings_mutex_);
  if (!free_holdings_.empty()) {
    const std::uint32_t index = free_holdings_.back();
    free_holdings_.pop_back();
    return index;
  }
  if (holdings_used_ == holdings_capacity_) {
    if (holdings_capacity_ >= (std::uint64_t{1} << 31)) return {LoanError::OutOfMemory, "too many held messages"};
    if (auto r = grow_holdings(); !r) return std::move(r).error();
  }
  const auto index = static_cast<std::uint32_t>(holdings_used_++);
  registry_->processes[slot_].holdings_used.store(holdings_used_, std::memory_order_release);
  return index;
}

void DomainState::fill_holding(std::uint32_t index, std::uint64_t block) noexcept {
  std::lock_guard guard(holdings_mutex_);
  if (left()) return;  // the table went back to the heap with the slot
  holdings_[index].store(block, std::memory_order_release);
}

void DomainState::clear_holding(std::uint32_t index) noexcept {
  std::lock_guard guard(holdings_mutex_);
  if (left()) return;  // the table went back to the heap with the slot
  holdings_[index].store(0, std::memory_order_release);
  free_holdings_.push_back(index);
}

void DomainState::unreserve_holding(std::uint32_t index) noexcept {
  if (left()) return;
  std::int64_t empty = -1;
  if (spare_holding_.compare_exchange_strong(empty, index, std::memory_order_release)) return;
  std::lock_guard guard(holdings_mutex_);
  free_holdings_.push_back(index);
}

void DomainState::release(std::uint32_t index, std::uint64_t block) noexcept {
  // After leave() the reference was given back with the slot: dropping it again would free twice.
  if (left()) return;
  clear_holding(index);  // unlisted first: a death in between leaks, never frees twice
  kill_point("release.unlisted");
  heap_.drop_ref(block);
}

Result<Loan, LoanError> DomainState::make_loan(std::uint64_t payload_bytes, MessageKind kind, std::size_t attachments,
                                               const Placement& placement) {
  if (attachments > kMaxAttachments) {
    return {LoanError::InvalidArgument, "at most " + std::to_string(kMaxAttachments) + " attachments"};
  }
  // The attachments' table follows the payload, 8-byte aligned. Sizes come
  // from callers (and Python users): nothing here may wrap around.
  if (payload_bytes > heap_.capacity()) {
    return {LoanError::TooLarge, "a message of " + format_bytes(payload_bytes) + " does not fit the domain heap of " +
                                     format_bytes(heap_.capacity())};
  }
  const std::uint64_t table = (payload_bytes + 7) / 8 * 8;
  auto holding = reserve_holding();
  if (!holding) return std::move(holding).error();
  auto block = heap_.allocate(table + attachments * sizeof(std::uint64_t), placement);
  if (!block) {
    unreserve_holding(*holding);
    return std::move(block).error();
  }
  kill_point("loan.allocated");
  fill_holding(*holding, *block);
  if (attachments > 0) heap_.header(*block)->attachment_table = table;
  return MessageAccess::make_loan({.domain = shared_from_this(),
                                   .block = *block,
                                   .holding = *holding,
                                   .fork_epoch = epoch_,
                                   .data = heap_.payload(*block),
                                   .size = payload_bytes,
                                   .attachments = static_cast<std::uint32_t>(attachments),
                                   .kind = kind});
}

void DomainState::fill_sample(Sample& sample, std::uint64_t block, std::byte* payload, std::uint32_t holding,
                              std::uint64_t size, MessageKind kind) {
  MessageAccess::fill_shared(sample, {.domain = shared_from_this(),
                                      .block = block,
                                      .holding = holding,
                                      .fork_epoch = epoch_,
                                      .data = payload,  // from Heap::checked_payload: not re-read from the block header
                                      .size = size,
                                      .kind = kind});
}

// Called by the last process attached: nobody is creating a queue, so a
// half-built one (a "new:" file) was left by a creator that died.
std::uint32_t DomainState::count_queues_removing_leftovers() noexcept {
  for (const auto& name : platform::shm_list(file_name("new:"))) (void)platform::shm_remove(name);
  // Queues, stores (src/store/store_file.hpp), topics (src/channel/topic_file.hpp)
  // and sync objects (src/sync/) are the named objects, which keep the domain.
  // The registry must outlive sync objects: their lock words name processes by
  // its slot generations.
  std::uint32_t named = 0;
  for (const char* kind : {"q:", "st:", "t:", "s:"}) {
    named += static_cast<std::uint32_t>(platform::shm_list(file_name(kind)).size());
  }
  registry_->named_objects.store(named, std::memory_order_relaxed);  // the files are the truth
  return named;
}

void DomainState::object_removed() noexcept {
  std::uint32_t count = registry_->named_objects.load(std::memory_order_relaxed);
  while (count > 0 && !registry_->named_objects.compare_exchange_weak(count, count - 1)) {
  }
}

DomainStats DomainState::stats() const {
  DomainStats out;
  if (forked_away()) return out;  // inherited across fork(): the registry is not mapped here
  out.heap_capacity = registry_->heap_capacity;
  out.heap_used = registry_->heap_top.load(std::memory_order_relaxed) - kHeapStart;
  out.live_bytes = registry_->live_bytes.load(std::memory_order_relaxed);
  out.cached_bytes = registry_->cached_bytes.load(std::memory_order_relaxed);
  out.live_blocks = registry_->live_blocks.load(std::memory_order_relaxed);
  out.huge_pages = heap_.has_huge_pages();
  if (out.huge_pages) out.huge_page_used = registry_->huge_top.load(std::memory_order_relaxed) - heap_capacity_;
  out.named_objects = registry_->named_objects.load(std::memory_order_relaxed);
  for (std::uint32_t s = 0; s < kMaxProcesses; ++s) {
    const ProcessSlot& slot = registry_->processes[s];
    if (slot.state.load(std::memory_order_acquire) != kSlotActive) continue;
    ProcessInfo info;
    info.slot = s;
    info.pid = slot.pid.load(std::memory_order_relaxed);
    info.alive = const_cast<DomainState*>(this)->token_alive(  // NOLINT(cppcoreguidelines-pro-type-const-cast)
        make_token(s, slot.generation.load(std::memory_order_relaxed)));
    const std::uint64_t table = slot.holdings.load(std::memory_order_acquire);
    if (table != 0 && heap_.check_block(table, 0)) {
      for (const auto& entry : holdings_table(table, slot.holdings_used.load(std::memory_order_relaxed))) {
        info.held_blocks += entry.load(std::memory_order_relaxed) != 0;
      }
      // The table itself is bookkeeping, not a message: leave it out of the counts.
      out.live_blocks -= std::min<std::uint64_t>(out.live_blocks, 1);
      out.live_bytes -= std::min(out.live_bytes, class_bytes(heap_.header(table)->size_class));
    }
    out.processes.push_back(info);
  }
  return out;
}

void DomainState::leave() noexcept {
  if (left_.exchange(true, std::memory_order_acq_rel)) return;
  if (has_slot_) {
    // Give back what is still listed (normally only the holdings table: every
    // loan and sample keeps the domain alive), then free the slot.
    reclaim_slot(slot_);
    platform::unlock_byte(registry_fd_, kSlotLockBase + slot_);
    has_slot_ = false;
  }
  if (attached_ && platform::lock_byte(registry_fd_, kInitLockByte, true)) {
    // Last one out removes the domain if no named object is left in it.
    platform::unlock_byte(registry_fd_, kLifecycleLockByte);
    auto last = platform::try_lock_byte(registry_fd_, kLifecycleLockByte, true);
    if (last && *last) {
      // What dead processes held goes back before the last one leaves, and
      // nothing stays cached for nobody.
      collect_garbage();
      heap_.trim_cache();
    }
    if (last && *last && count_queues_removing_leftovers() == 0) {
      if (huge_fd_ >= 0) (void)platform::remove_path(huge_file_path());
      (void)platform::shm_remove(file_name("heap"));
      kill_point("detach.heap_removed");
      (void)platform::shm_remove(file_name("registry"));
    }
    platform::unlock_byte(registry_fd_, kLifecycleLockByte);
    platform::unlock_byte(registry_fd_, kInitLockByte);
  }
  attached_ = false;
}

void DomainState::leave_all() noexcept {
  std::vector<std::shared_ptr<DomainState>> attached;
  {
    std::lock_guard guard(g_domains_mutex);
    for (auto& [name, state] : domains()) {
      if (auto alive = state.lock(); alive && !alive->forked_away()) attached.push_back(std::move(alive));
    }
  }
  for (auto& state : attached) state->leave();
  // `attached` may hold the last references: destroyed here, outside the lock (the destructor takes it).
}

void DomainState::detach() noexcept {
  if (forked_away()) {
    // Inherited from the parent: its slot and locks are the parent's. The fork
    // handler closed the registry descriptor already.
    // The registry's mappings were not inherited (keep_from_children).
    platform::unmap(reservation_, reservation_bytes_);
    platform::close_fd(heap_fd_);
    platform::close_fd(huge_fd_);
    return;
  }
  leave();
  platform::unmap(reservation_, reservation_bytes_);
  platform::unmap(registry_, sizeof(RegistryHeader));
  platform::unmap(page_map_, page_map_bytes_);
  platform::close_fd(huge_fd_);
  if (registry_fd_ >= 0) {
    keep_after_fork(registry_fd_);
    platform::close_fd(registry_fd_);
  }
  platform::close_fd(heap_fd_);
}

DomainState::~DomainState() {
  {
    std::lock_guard guard(g_domains_mutex);
    auto it = domains().find(name_);
    if (it != domains().end() && it->second.expired()) domains().erase(it);
  }
  detach();
}

}  // namespace hakobu::detail
