// hakobu — waking the waiters of a channel side: futex sleepers and event
// loops' wake sockets (the table format and its rules are in ring.hpp,
// "Waiter counts and event-loop watchers"; queues and topics share them).
#pragma once

#include <atomic>
#include <cstdint>
#include <string_view>

namespace hakobu::detail {

/// The abstract socket name of wake-socket `id` of this user, held in place
/// (no allocation: this runs on the send path). Not copyable: `view` points into `text`.
struct WakeSocketName {
  char text[64]{};
  std::string_view view;
  explicit WakeSocketName(std::uint64_t id) noexcept;
  WakeSocketName(const WakeSocketName&) = delete;
  WakeSocketName& operator=(const WakeSocketName&) = delete;
};

/// After publishing what waiters of one side wait for: a read-modify-write on
/// `waiting`; if sleepers are announced, stamps `stamp`, bumps `word` and wakes
/// `count` of them; if watchers are registered, signals every entry of `table`
/// (nullptr: the side has no watcher table).
void notify_waiters(std::atomic<std::uint32_t>& word, std::atomic<std::uint32_t>& waiting,
                    std::atomic<std::int64_t>& stamp, std::atomic<std::uint64_t>* table, int count) noexcept;
/// Bumps `word`, wakes every sleeper and signals every watcher (closing, unlinking).
void wake_all_waiters(std::atomic<std::uint32_t>& word, std::atomic<std::uint32_t>& waiting,
                      std::atomic<std::uint64_t>* table) noexcept;
/// Sends the cookie of every entry of `table` to its socket; empties entries whose socket is gone.
void signal_watchers(std::atomic<std::uint64_t>* table, std::atomic<std::uint32_t>& waiting) noexcept;
/// Registers socket `socket_id` with `cookie` in a free entry of `table`; false when the table is full.
bool add_watcher(std::atomic<std::uint64_t>* table, std::atomic<std::uint32_t>& waiting, std::uint64_t socket_id,
                 std::uint16_t cookie) noexcept;
/// Ends a registration made by add_watcher.
void remove_watcher(std::atomic<std::uint64_t>* table, std::atomic<std::uint32_t>& waiting, std::uint64_t socket_id,
                    std::uint16_t cookie) noexcept;

}  // namespace hakobu::detail
