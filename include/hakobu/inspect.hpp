// hakobu — what administration tools (`hakobu info`) show of a domain's named
// stores and sync objects, read from their files without using them.
//
//   auto lock = hakobu::inspect_sync("db").value();   // any kind: lock, event...
//   auto store = hakobu::inspect_store("features").value();
//
// A summary is a snapshot of shared memory that any process of the user may
// write: every field is bounds-checked and may be stale the moment it is read.
// Inspecting takes no lock, no reference and no slot of the object (the
// domain is attached, like any tool that reports on it, without reclaiming
// dead processes). Layouts: src/store/store_file.hpp, src/sync/sync_layout.hpp.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "hakobu/error.hpp"

namespace hakobu {

/// A sync object as its file says now.
struct SyncSummary {
  std::string name;
  std::string domain;
  std::uint32_t kind = 0;  ///< the header's kind number
  std::string kind_name;   ///< "lock", "event", or "kind N" for a kind this version does not know
  std::uint32_t word = 0;  ///< the raw lock or event word (for kinds this version does not know)
  std::int32_t creator_pid = 0;
  // Lock
  bool held = false;
  bool waiters = false;         ///< someone may sleep on the word (lock or event)
  std::int32_t holder_pid = 0;  ///< as the holder wrote it (0: unknown)
  bool holder_alive = false;    ///< the holder's process token still names a living process of the domain
  std::uint32_t owner_deaths = 0;
  // Event
  bool is_set = false;
};

/// Reads sync object `name` of `domain` (empty: the default). NotFound when
/// missing; Corrupt when its header fails the checks; Incompatible for another
/// layout version.
Result<SyncSummary, OpenError> inspect_sync(std::string_view name, std::string_view domain = {});

/// One key of a store.
struct StoreKeySummary {
  std::string key;
  std::uint64_t version = 0;
  std::uint64_t size = 0;     ///< the value's bytes
  std::string kind;           ///< "bytes", "array", "object" (what was stored)
  std::uint32_t readers = 0;  ///< references held on the value beside the store's own
  bool damaged = false;       ///< the entry or its record failed the checks (other fields unknown)
};

/// A store as its file says now.
struct StoreSummary {
  std::string name;
  std::string domain;
  std::uint64_t capacity = 0;  ///< entries (keys) it can hold
  std::int32_t creator_pid = 0;
  bool unlinked = false;              ///< removed while handles are open
  std::uint64_t value_bytes = 0;      ///< sum of the sizes of the keys' current values
  std::vector<StoreKeySummary> keys;  ///< keys that have a value, sorted
};

/// Reads store `name` of `domain` (empty: the default), as inspect_sync.
Result<StoreSummary, OpenError> inspect_store(std::string_view name, std::string_view domain = {});

}  // namespace hakobu
