// hakobu._core — administration: what the `hakobu` command needs to inspect
// queues, stores, sync objects and topics.
//
// Everything here goes through the public C++ API. Attaching to a queue or a
// domain also attaches this process to the domain (and creates the domain if
// it has no files), so the command checks for the domain's files first and
// holds one DomainAttachment for the whole command: every call below then
// reuses that attachment instead of attaching (and reclaiming) again.
// Finding a domain's files goes by their names alone (hakobu/domain_files.hpp),
// so that the command never re-derives the library's naming scheme.
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "channel.hpp"
#include "convert.hpp"
#include "errors.hpp"
#include "hakobu/domain.hpp"
#include "hakobu/domain_files.hpp"
#include "hakobu/inspect.hpp"
#include "hakobu/queue.hpp"
#include "hakobu/store.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace hakobu::python {
namespace {

/// Keeps this process attached to a domain until closed, so that the calls
/// made meanwhile share one attachment (one process-table slot).
struct DomainAttachment {
  std::optional<Domain> domain;

  explicit DomainAttachment(const std::string& name) {
    domain.emplace(open_domain(name, /*collect_on_attach=*/false));  // dead processes stay visible until `gc`
  }

  [[nodiscard]] std::string name() const { return domain ? domain->name() : std::string(); }

  void close() {
    nb::gil_scoped_release unlocked;  // the last process out may remove the domain's files
    domain.reset();
  }
};

/// Counters of queue `name` of `domain` (empty: the default domain). Attaches
/// to the queue for the duration of the call; raises NotFound if it is missing.
nb::typed<nb::dict, nb::str, nb::any> queue_info(const std::string& name, const std::string& domain) {
  QueueOptions options;
  options.domain.name = domain;
  auto queue = [&] {
    nb::gil_scoped_release unlocked;
    return Queue::attach(name, options);
  }();
  if (!queue) raise(queue.error());
  nb::dict out = queue_stats_dict(queue->stats());
  out["name"] = queue->name();
  out["domain"] = queue->domain().name();
  {
    nb::gil_scoped_release unlocked;
    *queue = Queue();  // let go of the queue file now
  }
  return out;
}

/// What sync object `name` of `domain` holds (hakobu/inspect.hpp); raises
/// NotFound if missing, Corrupt if damaged. Reads the file; takes nothing.
nb::typed<nb::dict, nb::str, nb::any> sync_info(const std::string& name, const std::string& domain) {
  check_name(name, "sync object");
  check_name(domain, "domain", /*empty_ok=*/true);
  auto summary = [&] {
    nb::gil_scoped_release unlocked;
    return inspect_sync(name, domain);
  }();
  if (!summary) raise(summary.error());
  nb::dict out;
  out["name"] = summary->name;
  out["domain"] = summary->domain;
  out["kind"] = summary->kind_name;
  out["creator_pid"] = summary->creator_pid;
  out["waiters"] = summary->waiters;
  const std::string& kind = summary->kind_name;
  const bool is_array = kind == "array" || kind == "value";
  const bool own_lock =
      kind == "lock" || kind == "rlock" || is_array || (kind == "condition" && summary->lock_name.empty());
  if (own_lock) {  // the lock word of a lock, an rlock, an array (get_lock()) or a condition's own lock
    out["held"] = summary->held;
    out["holder_pid"] = summary->held ? nb::cast(summary->holder_pid) : nb::none();
    out["holder_alive"] = summary->held ? nb::cast(summary->holder_alive) : nb::none();
    out["owner_deaths"] = summary->owner_deaths;
  }
  if (kind == "rlock") {
    out["depth"] = summary->depth;
  } else if (kind == "event") {
    out["set"] = summary->is_set;
  } else if (kind == "semaphore" || kind == "bounded_semaphore") {
    out["value"] = summary->value;
    out["bound"] = kind == "bounded_semaphore" ? nb::cast(summary->bound) : nb::none();
    out["returned"] = summary->returned;
    out["maybe_leaked"] = summary->maybe_leaked;
    nb::list holders;
    for (const SyncHolder& h : summary->holders) {
      nb::dict row;
      row["pid"] = h.pid;
      row["slot"] = h.slot;
      row["counts"] = h.counts;
      row["alive"] = h.alive;
      holders.append(row);
    }
    out["holders"] = holders;
  } else if (kind == "barrier") {
    out["parties"] = summary->parties;
    out["n_waiting"] = summary->n_waiting;
    out["broken"] = summary->broken;
    out["generation"] = summary->generation;
  } else if (kind == "condition") {
    out["lock_name"] = summary->lock_name.empty() ? nb::none() : nb::cast(summary->lock_name);
  } else if (is_array) {
    out["dtype"] = summary->dtype;
    out["shape"] = nb::tuple(nb::cast(summary->shape));
    out["data_bytes"] = summary->data_bytes;
  } else if (kind != "lock") {
    out["word"] = summary->word;  // a kind this version does not know: its raw word
  }
  return out;
}

/// What store `name` of `domain` holds: its keys with version, size, kind and readers.
nb::typed<nb::dict, nb::str, nb::any> store_info(const std::string& name, const std::string& domain) {
  check_name(name, "store");
  check_name(domain, "domain", /*empty_ok=*/true);
  auto summary = [&] {
    nb::gil_scoped_release unlocked;
    return inspect_store(name, domain);
  }();
  if (!summary) raise(summary.error());
  nb::dict out;
  out["name"] = summary->name;
  out["domain"] = summary->domain;
  out["kind"] = "store";
  out["capacity"] = summary->capacity;
  out["creator_pid"] = summary->creator_pid;
  out["unlinked"] = summary->unlinked;
  out["value_bytes"] = summary->value_bytes;
  nb::list keys;
  for (const auto& key : summary->keys) {
    nb::dict entry;
    entry["key"] = key.key;
    entry["damaged"] = key.damaged;
    entry["version"] = key.damaged ? nb::none() : nb::cast(key.version);
    entry["size"] = key.damaged ? nb::none() : nb::cast(key.size);
    entry["kind"] = key.damaged ? nb::none() : nb::cast(key.kind);
    entry["readers"] = key.damaged ? nb::none() : nb::cast(key.readers);
    keys.append(entry);
  }
  out["keys"] = keys;
  return out;
}

/// Removes store `name` of `domain` whoever created it: attaches and unlinks
/// it (the last handle out returns its values' memory to the heap).
void remove_store(const std::string& name, const std::string& domain) {
  check_name(name, "store");
  check_name(domain, "domain", /*empty_ok=*/true);
  auto removed = [&]() -> Result<void, UnlinkError> {
    nb::gil_scoped_release unlocked;
    StoreOptions options;
    options.domain.name = domain;
    auto store = Store::attach(name, options);
    if (!store) {
      const auto& error = store.error();
      return {error.code == OpenError::NotFound           ? UnlinkError::NotFound
              : error.code == OpenError::InvalidName      ? UnlinkError::InvalidName
              : error.code == OpenError::PermissionDenied ? UnlinkError::PermissionDenied
                                                          : UnlinkError::SystemError,
              error.message};
    }
    return store->unlink();
  }();
  if (!removed) raise(removed.error());
}

/// What topic `name` of `domain` holds: settings, counters, the messages its
/// ring keeps, and per subscription its pid, liveness, policy, state, lag,
/// drops and receipts (hakobu/inspect.hpp). Reads the file; takes nothing.
nb::typed<nb::dict, nb::str, nb::any> topic_info(const std::string& name, const std::string& domain) {
  check_name(name, "topic");
  check_name(domain, "domain", /*empty_ok=*/true);
  auto summary = [&] {
    nb::gil_scoped_release unlocked;
    return inspect_topic(name, domain);
  }();
  if (!summary) raise(summary.error());
  nb::dict out;
  out["name"] = summary->name;
  out["domain"] = summary->domain;
  out["kind"] = "topic";
  out["capacity"] = summary->capacity;
  out["history"] = summary->history;
  out["max_subscribers"] = summary->max_subscribers;
  out["inline_capacity"] = summary->inline_capacity;
  out["published"] = summary->published;
  out["creator_pid"] = summary->creator_pid;
  out["unlinked"] = summary->unlinked;
  out["retained"] = summary->retained;
  out["retained_bytes"] = summary->retained_bytes;
  out["tombstones"] = summary->tombstones;
  out["damaged_slots"] = summary->damaged_slots;
  nb::list subscribers;
  for (const auto& sub : summary->subscribers) {
    nb::dict row;
    row["entry"] = sub.entry;
    row["pid"] = sub.pid;
    row["alive"] = sub.alive;
    row["on_full"] = sub.on_full;
    row["state"] = sub.state;
    row["lag"] = sub.lag;
    row["dropped"] = sub.dropped;
    row["received"] = sub.received;
    subscribers.append(row);
  }
  out["subscribers"] = subscribers;
  return out;
}

/// The exception kind of a store put's error. Kept here until errors.hpp maps
/// the store's error enums (the Python Store's bindings); then raise() does it.
ErrorKind put_error_kind(StorePutError code) noexcept {
  switch (code) {
    case StorePutError::InvalidKey: return ErrorKind::InvalidArgument;
    case StorePutError::AlreadyExists: return ErrorKind::AlreadyExists;
    case StorePutError::Full: return ErrorKind::Full;
    case StorePutError::TooLarge: return ErrorKind::TooLarge;
    case StorePutError::OutOfMemory: return ErrorKind::OutOfSharedMemory;
    case StorePutError::Invalid: return ErrorKind::InvalidArgument;
    case StorePutError::Busy: return ErrorKind::SystemFailure;
    case StorePutError::Closed: return ErrorKind::Closed;
  }
  return ErrorKind::HakobuError;
}

/// Publishes `data` as bytes under `key` in store `name` of `domain`, creating
/// the store if needed; returns the value's version. What `hakobu` and its
/// tests need to make a store without the Python Store class.
std::uint64_t store_put_bytes(const std::string& name, const std::string& key, const nb::bytes& data,
                              const std::string& domain) {
  check_name(name, "store");
  check_name(domain, "domain", /*empty_ok=*/true);
  const std::span<const std::byte> bytes(static_cast<const std::byte*>(data.data()), data.size());
  StoreOptions options;
  options.domain.name = domain;
  nb::gil_scoped_release unlocked;  // `data` stays alive and unchanged: bytes are immutable
  auto store = Store::open(name, OpenMode::CreateOrAttach, options);
  if (!store) {
    nb::gil_scoped_acquire locked;
    raise(store.error());
  }
  auto put = store->put(key, bytes);
  if (!put) {
    nb::gil_scoped_acquire locked;
    throw PythonError(put_error_kind(put.error().code), put.error().message);
  }
  return *put;
}

/// (domain, kind, name) of a file name, kind as to_string(FileKind); None if no domain's.
using ParsedName = std::tuple<std::string, std::string, std::string>;

std::optional<ParsedName> parse_name(const std::string& file_name) {
  auto parsed = parse_file_name(file_name);
  if (!parsed) return std::nullopt;
  return ParsedName{std::move(parsed->domain), std::string(to_string(parsed->kind)), std::move(parsed->name)};
}

/// (path, kind, name) of every file of `domain`, in removal order.
std::vector<ParsedName> domain_files(const std::string& domain) {
  std::vector<DomainFile> files;
  {
    nb::gil_scoped_release unlocked;  // reads directories
    files = list_domain_files(domain);
  }
  std::vector<ParsedName> out;
  out.reserve(files.size());
  for (auto& file : files)
    out.emplace_back(std::move(file.path), std::string(to_string(file.kind)), std::move(file.name));
  return out;
}

}  // namespace

void bind_admin(nb::module_& m) {
  nb::class_<DomainAttachment>(m, "DomainAttachment",
                               "Keeps this process attached to a domain (creating it if it has no files) until closed")
      .def(nb::init<const std::string&>(), "name"_a = "")
      .def_prop_ro("name", &DomainAttachment::name)
      .def("close", &DomainAttachment::close, "Lets go of the domain (the last process out removes an empty one)")
      .def(
          "__enter__", [](DomainAttachment& self) -> DomainAttachment& { return self; }, nb::rv_policy::reference)
      .def(
          "__exit__", [](DomainAttachment& self, const nb::args& /*exc_info*/) { self.close(); },
          nb::sig("def __exit__(self, *args: object) -> None"));

  m.def("queue_info", &queue_info, "name"_a, "domain"_a = "",
        "Size, capacity, put/get counts and creator pid of a queue (attaches to it; NotFound if missing)");
  m.def("sync_info", &sync_info, "name"_a, "domain"_a = "",
        "kind ('lock', 'event'...), and for a lock held/holder_pid/holder_alive/waiters/owner_deaths, for an event "
        "set/waiters, of a sync object, read from its file; NotFound if missing, Corrupt if damaged");
  m.def("store_info", &store_info, "name"_a, "domain"_a = "",
        "capacity, creator and keys (key, version, size, kind, readers, damaged) of a store, read from its file "
        "without taking references; NotFound if missing, Corrupt if damaged");
  m.def("store_put_bytes", &store_put_bytes, "name"_a, "key"_a, "data"_a, "domain"_a = "",
        "Publishes bytes under a key of a store (created if missing); the version. For tools and tests");
  m.def("remove_store", &remove_store, "name"_a, "domain"_a = "",
        "Removes a store whoever created it (its values go back to the heap when their last reader lets go)");
  m.def("topic_info", &topic_info, "name"_a, "domain"_a = "",
        "capacity, history, counts, retained messages and subscribers (pid, alive, on_full, state, lag, dropped, "
        "received) of a topic, read from its file without taking anything; NotFound if missing, Corrupt if damaged");
  m.def(
      "validate_name", [](const std::string& name) { return validate_name(name); }, "name"_a,
      "Why a queue or domain name is invalid, or an empty string if it is valid");

  m.attr("FILE_NAME_PREFIX") = std::string(kFileNamePrefix);
  m.def("parse_file_name", &parse_name, "file_name"_a,
        "(domain, kind, name) of a file name (not a path), kind one of 'registry', 'heap', 'queue', 'new_queue', "
        "'store', 'sync', 'topic', 'other'; None if it is no file of a domain");
  m.def("domain_files", &domain_files, "domain"_a,
        "(path, kind, name) of every file of a domain in /dev/shm and on hugetlbfs mounts, found by name; kind one "
        "of 'registry', 'heap', 'huge_heap', 'queue', 'new_queue', 'store', 'sync', 'topic', 'other'; named objects "
        "first, the "
        "registry last");
  m.def(
      "domain_names",
      [] {
        nb::gil_scoped_release unlocked;  // reads directories
        return list_domains();
      },
      "The names of the domains that have files, sorted");
  m.def(
      "hugetlbfs_mounts",
      [] {
        std::vector<std::tuple<std::string, std::uint64_t>> out;
        for (auto& mount : hakobu::hugetlbfs_mounts()) out.emplace_back(std::move(mount.path), mount.page_size);
        return out;
      },
      "(path, page size in bytes) of every hugetlbfs mount, of any page size");
  m.def("shm_directory", &shm_directory, "The directory of shared-memory files");
}

}  // namespace hakobu::python
