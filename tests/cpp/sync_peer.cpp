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
// Exit 2 on any failure, with a message on stderr.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
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
  return fail("unknown mode " + mode);
}
