// hakobu chaos tests — the worker process the supervisor (test_chaos.cpp)
// starts, kills and replaces. It uses the public API only and inherits
// HAKOBU_DOMAIN (and, for injected kills, HAKOBU_KILL_AT) from the supervisor.
//
//   hakobu_chaos_worker producer --queue=Q --id=P --count=N --log=FILE
//       sends messages (P, 0) .. (P, N-1); after each accepted put, appends the
//       8-byte sequence number to FILE. The mix, chosen per message from (P, seq):
//       inline copies (32–224 B), block copies and loans built in place
//       (1 KiB–4 MiB), uint8 array loans, and envelopes whose content is a
//       separately loaned block attached with Loan::attach.
//   hakobu_chaos_worker forwarder --in=A --out=B --id=F
//       receives from A and forwards to B until a stop marker: a block message
//       travels as an envelope with the received sample attached (attach(sample)),
//       an envelope as a new envelope with its attachment 0 forwarded
//       (attach(sample, 0)), an inline message as a copy.
//   hakobu_chaos_worker consumer --queue=Q --id=C --log=FILE [--total=N]
//       receives until a stop marker (or N messages), verifies every content
//       and appends one 32-byte Record per message with write(2) before
//       releasing the sample.
//   hakobu_chaos_worker holder --queue=Q --count=N --ready=FILE
//       loans N blocks, fills them, creates FILE, then waits to be killed.
//   hakobu_chaos_worker gc
//       attaches without collecting, then runs Domain::collect_garbage().
//   hakobu_chaos_worker touch
//       attaches to the domain, loans and drops one block, and exits (the last
//       process out removes the domain's files).
//   hakobu_chaos_worker store [--name=S] [--rounds=R] [--unlink=1]
//       checks what store S holds, then R rounds of put, get-and-check and
//       (every third) erase over four keys; --unlink=1 removes S at the end.
//
// Exit codes are in chaos_message.hpp. A worker started with HAKOBU_KILL_AT
// that finishes normally exits with kExitKillPointMissed. alarm() ends a
// worker that hangs (SIGALRM: the supervisor reports it as a hang).
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "chaos_message.hpp"
#include "hakobu/hakobu.hpp"

namespace {

using namespace hakobu::chaos;  // NOLINT(google-build-using-namespace): the message format

using hakobu::Loan;
using hakobu::MessageKind;
using hakobu::Queue;
using hakobu::Sample;

std::map<std::string, std::string> g_options;

std::string option(const std::string& key, const std::string& fallback = {}) {
  const auto found = g_options.find(key);
  return found != g_options.end() ? found->second : fallback;
}

std::uint64_t number(const std::string& key, std::uint64_t fallback = 0) {
  const auto found = g_options.find(key);
  return found != g_options.end() ? std::stoull(found->second) : fallback;
}

void say(const std::string& what) {
  const std::string line = "chaos worker " + std::to_string(::getpid()) + ": " + what + "\n";
  (void)!::write(2, line.data(), line.size());
}

std::optional<Queue> attach(const std::string& name) {
  auto queue = Queue::attach(name);
  if (!queue) {
    say("attaching '" + name + "' failed: " + std::string(hakobu::to_string(queue.error().code)) + ": " +
        queue.error().message);
    return std::nullopt;
  }
  return std::move(queue).value();
}

/// An append-only log written with one write(2) per record.
class Log {
 public:
  explicit Log(const std::string& path) : fd_(::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600)) {}
  Log(const Log&) = delete;
  Log& operator=(const Log&) = delete;
  ~Log() {
    if (fd_ >= 0) ::close(fd_);
  }
  [[nodiscard]] bool ok() const { return fd_ >= 0; }
  bool append(const void* data, std::size_t size) const {
    return ::write(fd_, data, size) == static_cast<ssize_t>(size);
  }

 private:
  int fd_;
};

// --- the producer's mix -------------------------------------------------------------

enum class Way : std::uint8_t { InlineCopy, BlockCopy, LoanInPlace, ArrayLoan, Attachment };

std::uint64_t mix(std::uint64_t x) {
  x ^= x >> 33U;
  x *= 0xFF51'AFD7'ED55'8CCDULL;
  x ^= x >> 33U;
  x *= 0xC4CE'B9FE'1A85'EC53ULL;
  return x ^ (x >> 33U);
}

struct Plan {
  Way way;
  std::size_t size;
};

Plan plan(std::uint32_t producer, std::uint64_t seq) {
  const std::uint64_t r = mix(pattern_seed(producer, seq) + 0x1234'5678U);
  const std::uint64_t pick = r % 100;
  if (pick < 30) return {Way::InlineCopy, kStampBytes + static_cast<std::size_t>((r >> 8U) % (225 - kStampBytes))};
  // Block sizes: log-uniform over 1 KiB–64 KiB, one in ten over 64 KiB–4 MiB.
  const bool big = (r >> 16U) % 10 == 0;
  const unsigned low_log = big ? 16 : 10;
  const unsigned span_log = 6;
  const std::uint64_t step = (r >> 24U) % (span_log * 16);
  const auto size = static_cast<std::size_t>((std::uint64_t{1} << (low_log + step / 16)) +
                                             ((std::uint64_t{1} << (low_log + step / 16)) * (step % 16)) / 16);
  if (pick < 50) return {Way::BlockCopy, size};
  if (pick < 70) return {Way::LoanInPlace, size};
  if (pick < 80) return {Way::ArrayLoan, size};
  return {Way::Attachment, size};
}

int fail(const std::string& what) {
  say(what);
  return kExitOperationFailed;
}

int send_one(Queue& queue, std::uint32_t producer, std::uint64_t seq) {
  const Plan p = plan(producer, seq);
  switch (p.way) {
    case Way::InlineCopy:
    case Way::BlockCopy: {
      std::vector<std::byte> bytes(p.size);
      write_content(bytes, producer, seq);
      if (auto r = queue.put(bytes); !r) return fail("put failed: " + r.error().message);
      return kExitOk;
    }
    case Way::LoanInPlace: {
      auto loan = queue.loan(p.size);
      if (!loan) return fail("loan failed: " + loan.error().message);
      write_content(loan->bytes(), producer, seq);
      if (auto r = queue.put(*loan); !r) return fail("put of a loan failed: " + r.error().message);
      return kExitOk;
    }
    case Way::ArrayLoan: {
      const std::int64_t shape[] = {static_cast<std::int64_t>(p.size)};
      auto loan = queue.loan_array(hakobu::DType::of<std::uint8_t>(), shape);
      if (!loan) return fail("loan_array failed: " + loan.error().message);
      auto view = loan->array();
      if (!view) return fail("the array loan's own view failed: " + view.error().message);
      write_content({view->data, p.size}, producer, seq);
      if (auto r = queue.put(*loan); !r) return fail("put of an array loan failed: " + r.error().message);
      return kExitOk;
    }
    case Way::Attachment: {
      auto envelope = queue.loan(kEnvelopeBytes, MessageKind::Bytes, 1);
      if (!envelope) return fail("envelope loan failed: " + envelope.error().message);
      {
        auto data = queue.loan(p.size);
        if (!data) return fail("data loan failed: " + data.error().message);
        write_content(data->bytes(), producer, seq);
        if (auto a = envelope->attach(*data); !a) return fail("attach failed: " + a.error().message);
      }  // the data loan is dropped: the envelope holds the block now
      write_envelope(envelope->bytes(), {0, producer, 0, seq});
      if (auto r = queue.put(*envelope); !r) return fail("put of an envelope failed: " + r.error().message);
      return kExitOk;
    }
  }
  return kExitUsage;
}

int producer() {
  auto queue = attach(option("queue"));
  if (!queue) return kExitOpenFailed;
  const auto id = static_cast<std::uint32_t>(number("id"));
  const std::uint64_t count = number("count");
  const Log log(option("log"));
  if (!log.ok()) return kExitLogFailed;
  for (std::uint64_t seq = 0; seq < count; ++seq) {
    if (const int code = send_one(*queue, id, seq); code != kExitOk) return code;
    if (!log.append(&seq, sizeof seq)) return kExitLogFailed;
  }
  return kExitOk;
}

// --- forwarder ------------------------------------------------------------------------

bool is_stop_marker(const Sample& sample) {
  std::string why;
  const auto stamp = sample.attachment_count() == 0 && sample.kind() == MessageKind::Bytes
                         ? read_content(sample.bytes(), why)
                         : std::nullopt;
  return stamp && stamp->producer == kStopProducer;
}

/// The content of a message without attachments: its bytes, or an array's elements.
std::span<std::byte> plain_content(Sample& sample) {
  if (sample.kind() != MessageKind::Array) return sample.bytes();
  auto view = sample.array();
  if (!view) return {};
  return {view->data, static_cast<std::size_t>(view->size())};
}

int forwarder() {
  auto in = attach(option("in"));
  auto out = attach(option("out"));
  if (!in || !out) return kExitOpenFailed;
  const auto id = static_cast<std::uint32_t>(number("id"));
  for (;;) {
    auto sample = in->get();
    if (!sample) {
      say("get failed: " + sample.error().message);
      return sample.error().code == hakobu::GetError::Corrupt ? kExitCoreCorrupt : kExitOperationFailed;
    }
    if (is_stop_marker(*sample)) return kExitOk;
    if (!sample->in_shared_memory()) {  // inline: a copy
      if (auto r = out->put(sample->bytes(), sample->kind()); !r) return fail("put failed: " + r.error().message);
      continue;
    }
    Envelope envelope;
    envelope.forwarder = id;
    auto loan = out->loan(kEnvelopeBytes, MessageKind::Bytes, 1);
    if (!loan) return fail("envelope loan failed: " + loan.error().message);
    if (sample->attachment_count() > 0) {
      const auto old = read_envelope(sample->bytes());
      if (!old) {
        say("a message with attachments has no envelope");
        return kExitCorrupt;
      }
      envelope.flags = old->flags;
      envelope.producer = old->producer;
      envelope.seq = old->seq;
      if (auto a = loan->attach(*sample, 0); !a) return fail("forwarding attachment 0 failed: " + a.error().message);
    } else {
      std::string why;
      const auto stamp = read_content(plain_content(*sample), why);
      if (!stamp) {
        say("forwarder received a corrupt message: " + why);
        return kExitCorrupt;
      }
      envelope.flags = sample->kind() == MessageKind::Array ? kEnvelopeArray : 0;
      envelope.producer = stamp->producer;
      envelope.seq = stamp->seq;
      if (auto a = loan->attach(*sample); !a) return fail("attaching the sample failed: " + a.error().message);
    }
    write_envelope(loan->bytes(), envelope);
    sample->reset();  // the envelope holds the block now
    if (auto r = out->put(*loan); !r) return fail("put of an envelope failed: " + r.error().message);
  }
}

// --- consumer -------------------------------------------------------------------------

/// Verifies a received message; fills `record`. False (and `why`) if corrupt.
bool verify(Sample& sample, Record& record, std::string& why) {
  if (sample.in_shared_memory()) record.flags |= kInShared;
  std::span<std::byte> content = sample.bytes();
  std::optional<Envelope> envelope;
  bool array = sample.kind() == MessageKind::Array;
  if (sample.attachment_count() > 0) {
    record.flags |= kAttached;
    envelope = read_envelope(sample.bytes());
    if (!envelope) {
      why = "a message with attachments has no valid envelope";
      return false;
    }
    if (envelope->forwarder != 0) record.flags |= kForwarded;
    record.forwarder = static_cast<std::uint16_t>(envelope->forwarder);
    record.producer = envelope->producer;
    record.seq = envelope->seq;
    auto attached = sample.attachment(0);
    if (!attached) {
      why = "attachment 0: " + attached.error().message;
      return false;
    }
    content = *attached;
    array = (envelope->flags & kEnvelopeArray) != 0;
  }
  if (array) {
    record.flags |= kArray;
    auto view = envelope ? hakobu::parse_array(content) : sample.array();
    if (!view) {
      why = "array: " + view.error().message;
      return false;
    }
    if (view->dtype != hakobu::DType::of<std::uint8_t>() || view->ndim() != 1 || !view->is_c_contiguous()) {
      why = "array message with an unexpected layout";
      return false;
    }
    content = {view->data, static_cast<std::size_t>(view->size())};
  }
  const auto stamp = read_content(content, why);
  if (!stamp) return false;
  if (envelope && (envelope->producer != stamp->producer || envelope->seq != stamp->seq)) {
    why = "envelope names " + std::to_string(envelope->producer) + "/" + std::to_string(envelope->seq) +
          ", its content is " + std::to_string(stamp->producer) + "/" + std::to_string(stamp->seq);
    return false;
  }
  record.producer = stamp->producer;
  record.seq = stamp->seq;
  record.length = stamp->length;
  return true;
}

int consumer() {
  auto queue = attach(option("queue"));
  if (!queue) return kExitOpenFailed;
  const auto id = static_cast<std::uint32_t>(number("id"));
  const std::uint64_t total = number("total");  // 0: until a stop marker
  const Log log(option("log"));
  if (!log.ok()) return kExitLogFailed;
  for (std::uint64_t received = 0; total == 0 || received < total; ++received) {
    auto sample = queue->get();
    Record record;
    record.consumer = id;
    if (!sample) {
      say("get failed: " + std::string(hakobu::to_string(sample.error().code)) + ": " + sample.error().message);
      if (sample.error().code != hakobu::GetError::Corrupt) return kExitOperationFailed;
      record.flags = kCoreCorrupt;
      (void)log.append(&record, sizeof record);
      return kExitCoreCorrupt;
    }
    std::string why;
    if (!verify(*sample, record, why)) {
      say("corrupt message: " + why);
      record.flags |= kCorrupt;
      (void)log.append(&record, sizeof record);
      return kExitCorrupt;
    }
    if (record.producer == kStopProducer) return kExitOk;
    if (!log.append(&record, sizeof record)) return kExitLogFailed;
    sample->reset();  // released only after the record is written
  }
  return kExitOk;
}

// --- helpers for the injected kills ---------------------------------------------------------

int holder() {
  auto queue = attach(option("queue"));
  if (!queue) return kExitOpenFailed;
  std::vector<Loan> loans;
  for (std::uint64_t i = 0; i < number("count"); ++i) {
    auto loan = queue->loan(4096 << (i % 4));
    if (!loan) return fail("loan failed: " + loan.error().message);
    write_content(loan->bytes(), 0, i);
    loans.push_back(std::move(loan).value());
  }
  const std::string ready = option("ready");
  const int fd = ::open(ready.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return kExitLogFailed;
  ::close(fd);
  for (;;) ::pause();  // until SIGKILL
}

int gc() {
  hakobu::DomainOptions options;
  options.collect_on_attach = false;
  auto domain = hakobu::Domain::open(options);
  if (!domain) return kExitOpenFailed;
  say("collected " + std::to_string(domain->collect_garbage()) + " dead processes");
  return kExitOk;
}

int touch() {
  auto domain = hakobu::Domain::open();
  if (!domain) {
    say("opening the domain failed: " + domain.error().message);
    return kExitOpenFailed;
  }
  auto loan = domain->loan(4096);
  if (!loan) return fail("loan failed: " + loan.error().message);
  return kExitOk;
}

// A store's publisher and reader: --rounds puts of whole values (every byte
// the same, never 0) to four keys, each read back and checked, every third
// erased; --unlink=1 removes the store at the end.
int store() {
  auto opened = hakobu::Store::open(option("name", "chaos-store"));
  if (!opened) return fail("opening the store failed: " + opened.error().message);
  hakobu::Store& s = *opened;
  // 0: whole; else the exit code.
  auto check = [&](const std::string& key, bool must_exist) {
    auto value = s.get(key);
    if (!value) {
      if (!must_exist && value.error().code == hakobu::StoreGetError::NotFound) return 0;
      say("store get failed: " + value.error().message);
      return value.error().code == hakobu::StoreGetError::Corrupt ? kExitCoreCorrupt : kExitOperationFailed;
    }
    const auto got = value->bytes();
    if (got.empty() || got[0] == std::byte{0} || std::ranges::count(got, got[0]) != std::ssize(got)) {
      say("store value of " + key + " is torn");
      return kExitCorrupt;
    }
    return 0;
  };
  for (int k = 0; k < 4; ++k) {  // what an earlier publisher left, killed or not
    if (const int code = check("k" + std::to_string(k), false); code != 0) return code;
  }
  for (std::uint64_t i = 0; i < number("rounds", 40); ++i) {
    const std::string key = "k" + std::to_string(i % 4);
    const std::vector<std::byte> bytes(1000 + (997 * i) % 8000, static_cast<std::byte>(1 + i % 250));
    if (auto put = s.put(key, bytes); !put) return fail("store put failed: " + put.error().message);
    if (const int code = check(key, true); code != 0) return code;
    if (i % 3 == 2) (void)s.erase(key);
  }
  if (option("unlink") == "1") {
    if (auto unlinked = s.unlink(); !unlinked) return fail("store unlink failed: " + unlinked.error().message);
  }
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  ::alarm(600);  // a hung worker dies by SIGALRM, which the supervisor reports
  if (argc < 2) {
    say("usage: hakobu_chaos_worker ROLE --key=value... (see chaos_worker.cpp)");
    return kExitUsage;
  }
  const std::string role = argv[1];  // NOLINT(cppcoreguidelines-pro-bounds-pointer-arithmetic)
  for (int i = 2; i < argc; ++i) {
    const std::string arg = argv[i];  // NOLINT(cppcoreguidelines-pro-bounds-pointer-arithmetic)
    const auto equals = arg.find('=');
    if (!arg.starts_with("--") || equals == std::string::npos) {
      say("bad argument '" + arg + "'");
      return kExitUsage;
    }
    g_options[arg.substr(2, equals - 2)] = arg.substr(equals + 1);
  }
  const std::map<std::string, int (*)()> roles = {
      {"producer", producer}, {"forwarder", forwarder}, {"consumer", consumer}, {"holder", holder}, {"gc", gc},
      {"touch", touch},       {"store", store}};
  const auto found = roles.find(role);
  if (found == roles.end()) {
    say("unknown role '" + role + "'");
    return kExitUsage;
  }
  int code = kExitUsage;
  try {
    code = found->second();
  } catch (const std::exception& error) {  // std::stoull on a bad number
    say(role + ": " + error.what());
    return kExitUsage;
  }
  // Every handle is gone by now (the domain detached): a kill point that was
  // asked for and not reached is a scenario that missed its target.
  const char* kill_at = std::getenv("HAKOBU_KILL_AT");  // NOLINT(concurrency-mt-unsafe): no threads
  if (code == kExitOk && kill_at != nullptr && *kill_at != '\0') {
    // Said only for the kill a scenario is about (the supervisor passes --report-missed=1).
    if (option("report-missed") == "1") say(role + " finished without reaching HAKOBU_KILL_AT=" + kill_at);
    return kExitKillPointMissed;
  }
  return code;
}
