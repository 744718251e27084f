// hakobu — what administration tools (`hakobu info`) show of a domain's named
// stores, sync objects and topics, read from their files without using them.
//
//   auto lock = hakobu::inspect_sync("db").value();   // any kind: lock, event...
//   auto store = hakobu::inspect_store("features").value();
//   auto topic = hakobu::inspect_topic("camera").value();
//
// A summary is a snapshot of shared memory that any process of the user may
// write: every field is bounds-checked and may be stale the moment it is read.
// Inspecting takes no lock, no reference and no slot of the object (the
// domain is attached, like any tool that reports on it, without reclaiming
// dead processes). Layouts: src/store/store_file.hpp, src/sync/sync_layout.hpp,
// src/channel/topic_file.hpp.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "hakobu/error.hpp"

namespace hakobu {

/// Semaphore counts recorded for one process slot.
struct SyncHolder {
  std::uint32_t slot = 0;
  std::int32_t pid = 0;  ///< the slot's pid now (0: unknown; stale if `alive` is false)
  std::uint32_t counts = 0;
  bool alive = false;  ///< the recording process still lives (else its counts return to the next waiter)
};

/// A sync object as its file says now. Fields of other kinds keep their defaults.
struct SyncSummary {
  std::string name;
  std::string domain;
  std::uint32_t kind = 0;  ///< the header's kind number
  /// "lock", "event", "rlock", "semaphore", "bounded_semaphore", "barrier",
  /// "condition", "array", "value" (an array of no dimensions), or "kind N" for a kind
  /// this version does not know
  std::string kind_name;
  std::uint32_t word = 0;  ///< the raw word (lock, event, count, barrier state)
  std::int32_t creator_pid = 0;
  std::uint64_t file_bytes = 0;
  // Lock, RLock, and the lock of a Condition (its own) or an array (get_lock())
  bool held = false;
  bool waiters = false;         ///< someone may sleep on the word (any kind) or the condition
  std::int32_t holder_pid = 0;  ///< as the holder wrote it (0: unknown)
  bool holder_alive = false;    ///< the holder's process token still names a living process of the domain
  std::uint32_t owner_deaths = 0;
  // RLock
  std::uint32_t depth = 0;  ///< the owner thread's recursion count
  // Event
  bool is_set = false;
  // Semaphore, BoundedSemaphore
  std::uint32_t value = 0;          ///< counts free now
  std::uint32_t bound = 0;          ///< BoundedSemaphore: its initial value; 0 for Semaphore
  std::uint32_t returned = 0;       ///< counts given back from dead holders so far
  std::uint32_t maybe_leaked = 0;   ///< counts possibly lost by holders killed mid-operation
  std::vector<SyncHolder> holders;  ///< process slots recorded as holding counts, by slot
  // Barrier
  std::uint32_t parties = 0;
  std::uint32_t n_waiting = 0;   ///< parties arrived in the current generation
  std::uint32_t generation = 0;  ///< trips and resets so far (14 bits, wrapping)
  bool broken = false;
  // Condition
  std::string lock_name;  ///< the bound Lock's name; empty: the condition's own lock
  // SharedArray (hakobu.Value / hakobu.Array)
  std::string dtype;                ///< NumPy's name, e.g. "int64", "float32"
  std::vector<std::int64_t> shape;  ///< empty: a single value
  std::uint64_t data_bytes = 0;
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

/// One subscription of a topic, as its entry in the topic's file says.
struct TopicSubscriberSummary {
  std::uint32_t entry = 0;     ///< its index in the topic's subscriber table
  std::int32_t pid = 0;        ///< as the subscriber wrote it (0: unknown)
  bool alive = false;          ///< the process that holds the entry still lives (else publishers free it)
  std::string on_full;         ///< "drop_oldest", "block", or "on_full N" for a value this version does not know
  std::string state;           ///< "joining", "active" or "reading" (taking a message now)
  std::uint64_t lag = 0;       ///< messages published that it has not received (at most the capacity)
  std::uint64_t dropped = 0;   ///< messages publishers skipped it past (drop_oldest)
  std::uint64_t received = 0;  ///< messages it took
};

/// A topic as its file says now.
struct TopicSummary {
  std::string name;
  std::string domain;
  std::uint64_t capacity = 0;  ///< ring slots: how far a subscriber may fall behind
  std::uint64_t history = 0;   ///< messages kept for subscribers that join later
  std::uint64_t max_subscribers = 0;
  std::uint64_t inline_capacity = 0;  ///< largest message carried in a ring slot
  std::uint64_t published = 0;        ///< messages published over the topic's life
  std::int32_t creator_pid = 0;
  bool unlinked = false;             ///< removed while handles are open
  std::uint64_t file_bytes = 0;      ///< the topic file's size, as its header says
  std::uint64_t retained = 0;        ///< messages the ring holds now (published, not yet given back)
  std::uint64_t retained_bytes = 0;  ///< their bytes (inline or in heap blocks)
  std::uint64_t tombstones = 0;      ///< slots left by publishers that died mid-publish, not yet given back
  std::uint64_t damaged_slots = 0;   ///< slots whose message fails the checks (not counted above)
  std::vector<TopicSubscriberSummary> subscribers;  ///< by entry
};

/// Reads topic `name` of `domain` (empty: the default), as inspect_sync.
Result<TopicSummary, OpenError> inspect_topic(std::string_view name, std::string_view domain = {});

}  // namespace hakobu
