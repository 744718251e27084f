// hakobu tests — a separately started program for the sync tests (test_sync.cpp).
//
// Uses the public API only and inherits HAKOBU_DOMAIN, so it works in the
// test's domain. Modes:
//   hold LOCK READY          acquire LOCK, set event READY, then sleep until killed
//   acquire LOCK             acquire LOCK (waiting as long as it takes), release; exit 0
//                            if it was a clean acquire, 3 if OwnerDied
//   count LOCK FILE N        N times: acquire LOCK, add 1 to the 64-bit counter at the
//                            start of FILE by a plain read and write, release
//   wait EVENT MS            wait at most MS ms for EVENT: exit 0 if set, 1 if not
//   set EVENT                set EVENT
//   create LOCK DOMAIN       create LOCK in DOMAIN and exit (leaving the domain)
//   rhold RLOCK READY        acquire the recursive lock RLOCK twice, set READY, sleep until killed
//   racquire RLOCK           acquire RLOCK, release; exit 0 if clean, 3 if OwnerDied
//   shold SEM N READY        acquire N counts of semaphore SEM, set READY, sleep until killed
//   schurn SEM READY         acquire and release SEM over and over; set READY after 1000 rounds
//   sacquire SEM MS          acquire one count of SEM within MS ms (and keep it): exit 0, 1 on timeout
//   barrier BAR PARTIES MS   wait at barrier BAR (PARTIES) at most MS ms: exit 10 + the arrival
//                            index, 4 if broken, 5 on timeout
//   cwait COND FLAG          with condition COND's own lock held, wait (60 s at most) until the
//                            int64 shared value FLAG is nonzero: exit 0, 1 on timeout
//   vadd VALUE N             N times fetch_add(1) on the int64 shared value VALUE
//   vlock VALUE N            N times: under VALUE's lock, a plain read and write of +1
// Exit 2 on any failure, with a message on stderr.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>
#include <thread>

#include "hakobu/sync.hpp"

namespace {

int fail(const std::string& what) {
  std::fprintf(stderr, "sync_peer: %s\n", what.c_str());  // NOLINT(cppcoreguidelines-pro-type-vararg)
  return 2;
}

int count(const std::string& lock_name, const std::string& path, long n) {
  auto lock = hakobu::Lock::open(lock_name);
  if (!lock) return fail(lock.error().message);
  const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);  // NOLINT(cppcoreguidelines-pro-type-vararg)
  if (fd < 0) return fail("open " + path);
  void* mapped = ::mmap(nullptr, sizeof(std::uint64_t), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  if (mapped == MAP_FAILED) return fail("mmap " + path);
  // volatile: the point is a read-modify-write that only the lock makes safe.
  auto* counter = static_cast<volatile std::uint64_t*>(mapped);
  for (long i = 0; i < n; ++i) {
    if (auto got = lock->acquire(); !got) return fail(got.error().message);
    *counter = *counter + 1;
    if (auto r = lock->release(); !r) return fail(r.error().message);
  }
  ::munmap(mapped, sizeof(std::uint64_t));
  return 0;
}

[[noreturn]] void sleep_forever() {
  for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
}

long number(const std::string& text) {
  return std::strtol(text.c_str(), nullptr, 10);
}

int add_to_value(const std::string& name, long n, bool under_lock) {
  const std::int64_t zero = 0;
  auto value =
      hakobu::SharedArray::open_value(name, hakobu::DType::of<std::int64_t>(), std::as_bytes(std::span(&zero, 1)));
  if (!value) return fail(value.error().message);
  // volatile: under the lock the point is a read-modify-write that only the lock makes safe.
  auto* plain = reinterpret_cast<volatile std::int64_t*>(value->bytes().data());  // NOLINT
  for (long i = 0; i < n; ++i) {
    if (under_lock) {
      if (auto got = value->acquire(); !got) return fail(got.error().message);
      *plain = *plain + 1;
      if (auto r = value->release(); !r) return fail(r.error().message);
    } else if (auto r = value->fetch_add<std::int64_t>(0, 1); !r) {
      return fail(r.error().message);
    }
  }
  return 0;
}

int other_modes(const std::string& mode, const std::string& name, const std::string& arg3, const std::string& arg4) {
  if (mode == "rhold") {
    auto lock = hakobu::RLock::open(name);
    auto ready = hakobu::Event::open(arg3);
    if (!lock || !ready) return fail("open failed");
    if (!lock->acquire() || !lock->acquire()) return fail("acquire failed");
    ready->set();
    sleep_forever();
  }
  if (mode == "racquire") {
    auto lock = hakobu::RLock::open(name);
    if (!lock) return fail(lock.error().message);
    auto got = lock->acquire();
    if (!got) return fail(got.error().message);
    if (auto r = lock->release(); !r) return fail(r.error().message);
    return *got == hakobu::Acquired::OwnerDied ? 3 : 0;
  }
  if (mode == "shold") {
    auto semaphore = hakobu::Semaphore::open(name);
    auto ready = hakobu::Event::open(arg4);
    if (!semaphore || !ready) return fail("open failed");
    for (long i = 0; i < number(arg3); ++i) {
      if (auto got = semaphore->acquire(); !got) return fail(got.error().message);
    }
    ready->set();
    sleep_forever();
  }
  if (mode == "schurn") {
    auto semaphore = hakobu::Semaphore::open(name);
    auto ready = hakobu::Event::open(arg3);
    if (!semaphore || !ready) return fail("open failed");
    for (long i = 0;; ++i) {
      if (auto got = semaphore->acquire(); !got) return fail(got.error().message);
      if (auto r = semaphore->release(); !r) return fail(r.error().message);
      if (i == 1000) ready->set();
    }
  }
  if (mode == "sacquire") {
    auto semaphore = hakobu::Semaphore::open(name);
    if (!semaphore) return fail(semaphore.error().message);
    auto got = semaphore->acquire_for(std::chrono::milliseconds(number(arg3)));
    if (got) return 0;
    return got.error().code == hakobu::AcquireError::Timeout ? 1 : fail(got.error().message);
  }
  if (mode == "barrier") {
    auto barrier = hakobu::Barrier::open(name, static_cast<std::uint32_t>(number(arg3)));
    if (!barrier) return fail(barrier.error().message);
    auto index = barrier->wait_for(std::chrono::milliseconds(number(arg4)));
    if (index) return 10 + static_cast<int>(*index);
    return index.error().code == hakobu::BarrierError::Broken ? 4 : 5;
  }
  if (mode == "cwait") {
    auto condition = hakobu::Condition::open(name);
    auto flag = hakobu::SharedArray::open_value(arg3, hakobu::DType::of<std::int64_t>());
    if (!condition || !flag) return fail("open failed");
    if (auto got = condition->acquire(); !got) return fail(got.error().message);
    auto woke =
        condition->wait_until([&] { return flag->load<std::int64_t>(0).value() != 0; }, std::chrono::seconds(60));
    if (!woke) return fail(woke.error().message);
    if (auto r = condition->release(); !r) return fail(r.error().message);
    return woke->notified ? 0 : 1;
  }
  if (mode == "vadd" || mode == "vlock") return add_to_value(name, number(arg3), mode == "vlock");
  return fail("unknown mode " + mode);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) return fail("usage: sync_peer MODE NAME ...");
  const std::string mode = argv[1];                  // NOLINT(cppcoreguidelines-pro-bounds-pointer-arithmetic)
  const std::string name = argv[2];                  // NOLINT(cppcoreguidelines-pro-bounds-pointer-arithmetic)
  const std::string arg3 = argc > 3 ? argv[3] : "";  // NOLINT(cppcoreguidelines-pro-bounds-pointer-arithmetic)
  const std::string arg4 = argc > 4 ? argv[4] : "";  // NOLINT(cppcoreguidelines-pro-bounds-pointer-arithmetic)
  if (mode == "hold") {
    auto lock = hakobu::Lock::open(name);
    auto ready = hakobu::Event::open(arg3);
    if (!lock || !ready) return fail("open failed");
    if (auto got = lock->acquire(); !got) return fail(got.error().message);
    ready->set();
    for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  if (mode == "acquire") {
    auto lock = hakobu::Lock::open(name);
    if (!lock) return fail(lock.error().message);
    auto got = lock->acquire();
    if (!got) return fail(got.error().message);
    if (auto r = lock->release(); !r) return fail(r.error().message);
    return *got == hakobu::Acquired::OwnerDied ? 3 : 0;
  }
  if (mode == "count") return count(name, arg3, std::strtol(arg4.c_str(), nullptr, 10));
  if (mode == "wait") {
    auto event = hakobu::Event::open(name);
    if (!event) return fail(event.error().message);
    return event->wait_for(std::chrono::milliseconds(std::strtol(arg3.c_str(), nullptr, 10))) ? 0 : 1;
  }
  if (mode == "set") {
    auto event = hakobu::Event::open(name);
    if (!event) return fail(event.error().message);
    event->set();
    return 0;
  }
  if (mode == "create") {
    hakobu::SyncOptions options;
    options.domain.name = arg3;
    auto lock = hakobu::Lock::open(name, hakobu::OpenMode::CreateExclusive, options);
    return lock ? 0 : fail(lock.error().message);
  }
  return other_modes(mode, name, arg3, arg4);
}
