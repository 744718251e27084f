// hakobu — waking the waiters of a channel side (watchers.hpp).
#include "channel/watchers.hpp"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>

#include "channel/ring.hpp"
#include "platform/os.hpp"

namespace hakobu::detail {

WakeSocketName::WakeSocketName(std::uint64_t id) noexcept {
  const int n = std::snprintf(text, sizeof text, "hakobu-wake.%u.%012llx", static_cast<unsigned>(platform::user_id()),
                              static_cast<unsigned long long>(id & ((std::uint64_t{1} << 48) - 1)));
  view = std::string_view(text, n > 0 ? std::min<std::size_t>(static_cast<std::size_t>(n), sizeof text - 1) : 0);
}

namespace {

/// The process's socket to send wake-ups from (made once; -1 if it cannot be).
int sending_socket() noexcept {
  static const int fd = [] {
    auto made = platform::datagram_socket();
    return made ? *made : -1;
  }();
  return fd;
}

}  // namespace

void notify_waiters(std::atomic<std::uint32_t>& word, std::atomic<std::uint32_t>& waiting,
                    std::atomic<std::int64_t>& stamp, std::atomic<std::uint64_t>* table, int count) noexcept {
  // A read-modify-write, not a load: it is ordered with the waiter's increment
  // in `waiting`'s modification order. Either it reads the increment (we wake
  // the waiter), or the waiter's increment reads ours and so sees our
  // publication when it tries again before sleeping. The same holds for a
  // watcher's registration (ring.hpp, "Waiter counts and event-loop watchers").
  const std::uint32_t announced = waiting.fetch_add(0, std::memory_order_acq_rel);
  if (announced == 0) return;
  if ((announced & kSleeperMask) != 0) {
    // When the sleepers' wait really ended (their history leaves the wake-up's latency out).
    stamp.store(platform::monotonic_ns(), std::memory_order_relaxed);
    word.fetch_add(1, std::memory_order_release);
    platform::futex_wake(&word, count);
  }
  if (announced >= kWatcherUnit && table != nullptr) signal_watchers(table, waiting);
}

void wake_all_waiters(std::atomic<std::uint32_t>& word, std::atomic<std::uint32_t>& waiting,
                      std::atomic<std::uint64_t>* table) noexcept {
  word.fetch_add(1, std::memory_order_release);
  platform::futex_wake(&word, INT_MAX);
  // Event loops too: they find the channel closed or unlinked when they try again.
  if (table != nullptr) signal_watchers(table, waiting);
}

void signal_watchers(std::atomic<std::uint64_t>* table, std::atomic<std::uint32_t>& waiting) noexcept {
  const int sender = sending_socket();
  if (sender < 0) return;
  for (std::size_t i = 0; i < kWatcherSlots; ++i) {  // bounded by the table, whatever the count says
    std::uint64_t entry = table[i].load(std::memory_order_acquire);
    if (entry == 0) continue;
    // The name is made of this process's uid and 48 bits of the entry: at worst
    // a forged entry reaches another socket of ours (a spurious wake-up).
    const auto sent = platform::send_datagram(sender, WakeSocketName(entry >> 16U).view, &entry, sizeof entry);
    if (!sent && (sent.error().code == ECONNREFUSED || sent.error().code == ENOENT)) {
      // Nobody has that socket any more (its process died or closed it): the
      // entry would cost every send a system call forever. Empty it once.
      if (table[i].compare_exchange_strong(entry, 0, std::memory_order_acq_rel)) {
        waiting.fetch_sub(kWatcherUnit, std::memory_order_acq_rel);
      }
    }
    // EAGAIN: the socket's queue is full, so a wake-up is pending there anyway.
  }
}

bool add_watcher(std::atomic<std::uint64_t>* table, std::atomic<std::uint32_t>& waiting, std::uint64_t socket_id,
                 std::uint16_t cookie) noexcept {
  const std::uint64_t entry = socket_id << 16U | cookie;
  for (std::size_t i = 0; i < kWatcherSlots; ++i) {
    std::uint64_t expected = 0;
    if (table[i].compare_exchange_strong(expected, entry, std::memory_order_seq_cst)) {
      // Then the count, seq_cst: ordered against a notifier's read-modify-write (notify_waiters).
      waiting.fetch_add(kWatcherUnit, std::memory_order_seq_cst);
      return true;
    }
  }
  return false;
}

void remove_watcher(std::atomic<std::uint64_t>* table, std::atomic<std::uint32_t>& waiting, std::uint64_t socket_id,
                    std::uint16_t cookie) noexcept {
  const std::uint64_t entry = socket_id << 16U | cookie;
  for (std::size_t i = 0; i < kWatcherSlots; ++i) {
    std::uint64_t expected = entry;
    if (table[i].compare_exchange_strong(expected, 0, std::memory_order_acq_rel)) {
      waiting.fetch_sub(kWatcherUnit, std::memory_order_acq_rel);
      return;
    }
  }
}

}  // namespace hakobu::detail
