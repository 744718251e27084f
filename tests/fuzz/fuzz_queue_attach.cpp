// fuzz_queue_attach — a queue file written by a buggy or hostile process:
// Queue::open (attach-only) validates its header (QueueHeader), then the ring
// protocol runs over fuzz-made control words and slot descriptors (SlotHeader).
//
// Each iteration makes a fresh domain fz<pid>q (16 MiB heap, no huge pages)
// holding two loans (1000 and 300 bytes), then writes the input, byte for byte, as the file
// /dev/shm/hakobu:fz<pid>q:q:f (mode 0600): a QueueHeader (sizeof: 1856 bytes in
// queue layout 4, with the byte count and limit, the stream flags, the
// untracked-sender and registration counters, and the table of 64 sender
// entries with their reservations), then the slots. If Queue::open accepts it, a
// second handle opens it as a sender (QueueOptions::sends); then try_get,
// try_put (inline and by block: the byte limit), a loan sent with try_put,
// size() and stats() (senders, end of stream), each three times, and once get
// and put with a 1 ms timeout; the sending handle closes with Ending::Failed
// and the first tries once more (the end of the stream, dead entries reaped
// by a poller), closes, then Queue::remove (unlinking: the last handle to
// close drains the ring, dropping the blocks its slots name). Every call must
// return: libFuzzer's -timeout reports a hang.
//
// Sender entries can name this process (its token in a fresh domain is the
// seeds' generator's, see fuzz_seeds.cpp), a dead or an unused process slot,
// or be garbage; no other process lives in the fuzz domain, so an entry the
// library must take for another live process is the multi-process tests'
// subject (tests/cpp/test_queue_stream.cpp), not this target's.
//
// The input is raw (no block references): the loans lie at fixed offsets in a
// fresh domain, and the seeds made by fuzz_seeds name them in their slots.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "fuzz_support.hpp"
#include "hakobu/hakobu.hpp"

namespace {

using namespace std::chrono_literals;

std::string g_domain;  // NOLINT(cppcoreguidelines-avoid-non-const-global-variables)

[[noreturn]] void harness_broken(const std::string& what) {
  hakobu::fuzz::harness_broken("fuzz_queue_attach", what);
}

hakobu::QueueOptions queue_options() {
  return hakobu::fuzz::small_queue_options(g_domain, hakobu::QueueOptions{}.capacity);
}

void inspect(hakobu::Sample& sample) {
  hakobu::fuzz::touch(sample.bytes());
  for (std::size_t i = 0; i < 2; ++i) {
    if (auto a = sample.attachment(i)) hakobu::fuzz::touch(*a);
  }
  if (sample.kind() == hakobu::MessageKind::Array) (void)sample.array();
}

void exercise(hakobu::Queue& queue) {
  std::vector<hakobu::Sample> held;
  const auto keep = [&](hakobu::Result<hakobu::Sample, hakobu::GetError> got) {
    if (!got) return;
    inspect(*got);
    held.push_back(std::move(*got));
  };
  std::byte small[16] = {};
  std::vector<std::byte> large(1000, std::byte{0x5A});
  for (int round = 0; round < 3; ++round) {
    keep(queue.try_get());
    (void)queue.try_put(small);
    (void)queue.try_put(large);
    if (round == 1) {  // the timed forms wait out their timeout on an empty or full queue: once
      keep(queue.get(1ms));
      (void)queue.put(small, 1ms);
    }
    if (auto loan = queue.loan(500)) (void)queue.try_put(*loan);
    keep(queue.try_get());
    (void)queue.size();
    (void)queue.stats();
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  g_domain = hakobu::fuzz::domain_name("q");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const hakobu::fuzz::LeakCheck leaks(g_domain);
  const auto options = queue_options();
  auto domain = hakobu::Domain::open(options.domain);
  if (!domain) harness_broken(domain.error().message);
  // Blocks for the slots to name (see fuzz_seeds.cpp).
  auto data_loan = domain->loan(1000);
  auto message = domain->loan(300);
  if (!data_loan || !message) harness_broken("loans");

  hakobu::fuzz::write_file("hakobu:" + g_domain + ":q:f",
                           std::as_bytes(std::span(reinterpret_cast<const char*>(data), size)));  // NOLINT
  {
    auto queue = hakobu::Queue::open("f", hakobu::OpenMode::AttachOnly, options);
    if (queue) {
      auto sending_options = options;
      sending_options.sends = true;
      auto sender = hakobu::Queue::open("f", hakobu::OpenMode::AttachOnly, sending_options);
      exercise(*queue);
      if (sender) sender->close(hakobu::Ending::Failed);
      if (auto got = queue->try_get()) inspect(*got);
      (void)queue->stats();
      queue->close();
      (void)hakobu::Queue::remove("f", g_domain);
    }
  }
  return 0;
}
