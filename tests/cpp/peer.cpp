// hakobu tests — the peer process of the multi-process tests.
//
// `hakobu_test_peer MODE ARGS...` is started by test_multiprocess.cpp with
// posix_spawn (a separate executable, never a fork of the test). It uses the
// public API only and inherits HAKOBU_DOMAIN, so it works in the test's domain.
//
// Modes (QUEUE is a queue name, FILE an absolute path, MS milliseconds with -1
// meaning "wait forever" and 0 meaning the non-blocking try_ form):
//   produce QUEUE PRODUCER COUNT           COUNT stamped messages, seq 0..COUNT-1
//   consume QUEUE OUTFILE COUNT            COUNT stamped messages (0: until a sentinel);
//                                          one line "PRODUCER SEQ SIZE" per message
//   hold-sample QUEUE READYFILE            receive one stamped message, report it
//                                          in READYFILE, then hold it until killed
//   hold-loan QUEUE SIZE READYFILE         loan SIZE bytes, touch them, report, hold until killed
//   produce-sizes QUEUE OUTFILE SPEC...    SPEC = SIZE or SIZE:loan; one pattern message
//                                          each; lines "SIZE HASH" of what was sent
//   consume-sizes QUEUE OUTFILE COUNT      lines "SIZE HASH IN_SHARED_MEMORY" of what arrived
//   produce-arrays QUEUE                   the array messages of kArraySpecs
//   consume-arrays QUEUE OUTFILE           checks them; one line per array describing its layout
//   get-report QUEUE COUNT OUTFILE         COUNT gets; lines "ok SIZE HASH" or "err CODE"
//   get-expect QUEUE EXPECT MS [READYFILE] one get; EXPECT is "ok" or a GetError name
//   put-expect QUEUE SIZE EXPECT MS [READYFILE]
//                                          one put of SIZE bytes; EXPECT "ok" or a PutError name
//   open NAME MODE EXPECT                  MODE attach|exclusive|either; EXPECT "ok"
//                                          or an OpenError name
//   unlink QUEUE EXPECT                    attach, then unlink; EXPECT "ok" or an UnlinkError name
//   echo IN OUT COUNT                      COUNT times: receive from IN, send the same bytes to OUT
//   race-open NAME GOFILE OUTFILE          wait until GOFILE exists, then open NAME create-or-attach;
//                                          OUTFILE says "created", "attached" or "err CODE: message"
//   steps QUEUE STEP...                    the steps in order (the end-of-stream and byte-capacity
//                                          tests, test_queue_stream.cpp):
//       kill-at:POINT:N    die (SIGKILL) at the N-th pass through kill point POINT (before open-*)
//       open | open-sends  attach QUEUE (open-sends: counted as a sender from the start)
//       put:COUNT:SIZE:ID  COUNT stamped messages of SIZE bytes (0: stamped_size) from producer ID
//       get:COUNT          COUNT gets, each must bring a stamped message
//       drain:OUTFILE      get until an error; a line "ID SEQ SIZE" per message (flushed),
//                          then "end ERROR" (the GetError's name)
//       ready:FILE         write FILE          wait:FILE   wait until FILE exists
//       close | close-failed   Queue::close(Ending::Finished | Ending::Failed)
//       hold               wait to be killed   exit        _exit(0), nothing closed
//     Ends (after the last step) as --exit says.
// Any mode takes --spin=NS: how long blocking calls spin before they sleep
// (0: always sleep on the futex at once).
// Any mode takes a trailing --exit=close|exit|_exit: how the peer ends once its
// work is done — close its queue and return (default), std::exit() with the
// queue still open, or _exit() with nothing cleaned up at all.
//
// Exit codes: 0 as expected; 1 bad usage; 2 open failed; 3 an operation gave
// another outcome than expected; 4 received data failed verification.
// Diagnostics go to stderr. alarm() ends a forgotten peer after 5 minutes.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "hakobu/hakobu.hpp"
#include "message_stamp.hpp"

namespace {

using namespace hakobu::test;  // NOLINT(google-build-using-namespace): the message contents

using namespace std::chrono_literals;
using hakobu::DType;
using hakobu::DTypeCode;
using hakobu::Order;
using hakobu::Queue;
using Args = std::vector<std::string>;

constexpr int kOk = 0;
constexpr int kUsage = 1;
constexpr int kOpenFailed = 2;
constexpr int kWrongOutcome = 3;
constexpr int kBadData = 4;

// --- message contents (kept identical to test_multiprocess.cpp) ----------------------

/// Fills `out` with a deterministic pseudo-random pattern (xorshift64).

// --- small helpers ------------------------------------------------------------------

std::chrono::nanoseconds parse_ms(const std::string& text) {
  const long long ms = std::stoll(text);
  if (ms < 0) return std::chrono::nanoseconds::max();
  return std::chrono::milliseconds(ms);
}

/// Writes `text` to `path` atomically (the test polls for the file to appear).
void write_ready(const std::string& path, const std::string& text) {
  const std::string temporary = path + ".tmp";
  {
    std::ofstream out(temporary);
    out << text << "\n";
  }
  std::filesystem::rename(temporary, path);
}

[[noreturn]] void hold_forever() {
  for (;;) ::pause();  // until SIGKILL (or the alarm)
}

enum class ExitStyle { Close, Exit, UnderscoreExit };
ExitStyle g_exit_style = ExitStyle::Close;
std::optional<std::chrono::nanoseconds> g_spin;  // --spin; unset: the library's default

/// Ends the peer as --exit asked once its work is done. Out-files must be
/// flushed and closed before this.
int finish(Queue& queue, int code) {
  std::cout.flush();
  std::cerr.flush();
  switch (g_exit_style) {
    case ExitStyle::Close: queue.close(); return code;
    case ExitStyle::Exit: std::exit(code);  // NOLINT(concurrency-mt-unsafe): queue deliberately left open
    case ExitStyle::UnderscoreExit: ::_exit(code);
  }
  return code;
}

std::optional<Queue> open_queue(const std::string& name, hakobu::QueueOptions options = {}) {
  auto queue = Queue::attach(name, options);
  if (!queue) {
    std::cerr << "peer: attaching '" << name << "' failed: " << hakobu::to_string(queue.error().code) << ": "
              << queue.error().message << "\n";
    return std::nullopt;
  }
  if (g_spin) queue->set_spin(*g_spin);
  return std::move(queue).value();
}

/// Sends one stamped message, by copy or, when `by_loan`, built in place.
hakobu::Result<void, hakobu::PutError> put_stamped(Queue& queue, std::uint32_t producer, std::uint64_t seq,
                                                   std::size_t size, bool by_loan) {
  if (by_loan) {
    auto loan = queue.loan(size);
    if (!loan) return {hakobu::PutError::OutOfMemory, loan.error().message};
    write_stamp(loan->bytes(), producer, seq);
    return queue.put(*loan);
  }
  std::vector<std::byte> buffer(size);
  write_stamp(buffer, producer, seq);
  return queue.put(buffer);
}

// --- modes --------------------------------------------------------------------------

int produce(const Args& args) {
  if (args.size() != 3) return kUsage;
  auto queue = open_queue(args[0]);
  if (!queue) return kOpenFailed;
  const auto producer = static_cast<std::uint32_t>(std::stoul(args[1]));
  const std::uint64_t count = std::stoull(args[2]);
  for (std::uint64_t seq = 0; seq < count; ++seq) {
    const std::size_t size = stamped_size(producer, seq);
    // Block-sized messages alternate between the copy and the loan path.
    const bool by_loan = size > hakobu::kMaxInlineBytes && seq % 2 == 1;
    if (auto r = put_stamped(*queue, producer, seq, size, by_loan); !r) {
      std::cerr << "peer produce: put " << seq << " failed: " << r.error().message << "\n";
      return kWrongOutcome;
    }
  }
  return finish(*queue, kOk);
}

int consume(const Args& args) {
  if (args.size() != 3) return kUsage;
  auto queue = open_queue(args[0]);
  if (!queue) return kOpenFailed;
  const std::uint64_t count = std::stoull(args[2]);  // 0: until a sentinel
  std::ofstream out(args[1]);
  int code = kOk;
  for (std::uint64_t received = 0; count == 0 || received < count;) {
    auto sample = queue->get();
    if (!sample) {
      std::cerr << "peer consume: get failed: " << sample.error().message << "\n";
      code = kWrongOutcome;
      break;
    }
    std::string why;
    const auto stamp = read_stamp(sample->bytes(), why);
    if (!stamp) {
      std::cerr << "peer consume: " << why << "\n";
      code = kBadData;
      break;
    }
    if (stamp->producer == kSentinelProducer) break;
    if (sample->size() != stamped_size(stamp->producer, stamp->seq)) {
      std::cerr << "peer consume: message " << stamp->producer << "/" << stamp->seq << " has the wrong size\n";
      code = kBadData;
      break;
    }
    out << stamp->producer << " " << stamp->seq << " " << sample->size() << "\n";
    ++received;
  }
  out.close();
  return finish(*queue, code);
}

int hold_sample(const Args& args) {
  if (args.size() != 2) return kUsage;
  auto queue = open_queue(args[0]);
  if (!queue) return kOpenFailed;
  auto sample = queue->get();
  if (!sample) {
    std::cerr << "peer hold-sample: get failed: " << sample.error().message << "\n";
    return kWrongOutcome;
  }
  std::string why;
  const auto stamp = read_stamp(sample->bytes(), why);
  if (!stamp) {
    std::cerr << "peer hold-sample: " << why << "\n";
    return kBadData;
  }
  write_ready(args[1], std::to_string(stamp->producer) + " " + std::to_string(stamp->seq) + " " +
                           std::to_string(sample->size()) + " " + (sample->in_shared_memory() ? "1" : "0"));
  hold_forever();
}

int hold_loan(const Args& args) {
  if (args.size() != 3) return kUsage;
  auto queue = open_queue(args[0]);
  if (!queue) return kOpenFailed;
  auto loan = queue->loan(std::stoull(args[1]));
  if (!loan) {
    std::cerr << "peer hold-loan: loan failed: " << loan.error().message << "\n";
    return kWrongOutcome;
  }
  fill_pattern(loan->bytes(), 7);  // every page touched
  write_ready(args[2], std::to_string(loan->bytes().size()));
  hold_forever();
}

int produce_sizes(const Args& args) {
  if (args.size() < 3) return kUsage;
  auto queue = open_queue(args[0]);
  if (!queue) return kOpenFailed;
  std::ofstream out(args[1]);
  for (std::size_t i = 2; i < args.size(); ++i) {
    const std::string& spec = args[i];
    const std::size_t size = std::stoull(spec);
    const bool by_loan = spec.ends_with(":loan");
    const std::uint64_t seed = i;
    std::uint64_t hash = 0;
    hakobu::Result<void, hakobu::PutError> sent;
    if (by_loan) {
      auto loan = queue->loan(size);
      if (!loan) {
        std::cerr << "peer produce-sizes: loan of " << size << " failed: " << loan.error().message << "\n";
        return kWrongOutcome;
      }
      fill_pattern(loan->bytes(), seed);
      hash = hash_bytes(loan->bytes());
      sent = queue->put(*loan);
    } else {
      std::vector<std::byte> buffer(size);
      fill_pattern(buffer, seed);
      hash = hash_bytes(buffer);
      sent = queue->put(buffer);
    }
    if (!sent) {
      std::cerr << "peer produce-sizes: put of " << size << " failed: " << sent.error().message << "\n";
      return kWrongOutcome;
    }
    out << size << " " << hash << "\n";
  }
  out.close();
  return finish(*queue, kOk);
}

int consume_sizes(const Args& args) {
  if (args.size() != 3) return kUsage;
  auto queue = open_queue(args[0]);
  if (!queue) return kOpenFailed;
  std::ofstream out(args[1]);
  const std::uint64_t count = std::stoull(args[2]);
  for (std::uint64_t i = 0; i < count; ++i) {
    auto sample = queue->get();
    if (!sample) {
      std::cerr << "peer consume-sizes: get failed: " << sample.error().message << "\n";
      return kWrongOutcome;
    }
    out << sample->size() << " " << hash_bytes(sample->bytes()) << " " << (sample->in_shared_memory() ? 1 : 0) << "\n";
  }
  out.close();
  return finish(*queue, kOk);
}

// --- arrays -------------------------------------------------------------------------

struct ArraySpec {
  DType dtype;
  std::vector<std::int64_t> shape;
  Order order = Order::C;
  std::string typestr;
  bool copy = false;  // sent with put_array (C order) instead of loan_array
};

const std::vector<ArraySpec>& array_specs() {
  static const std::vector<ArraySpec> specs = {
      {DType::of<float>(), {3, 4, 5}, Order::C, "", false},
      {DType::of<std::int16_t>(), {7, 3}, Order::F, "", false},
      {DType::of<double>(), {2, 3}, Order::C, "", true},      // small enough to ride inline
      {DType::of<std::uint8_t>(), {}, Order::C, "", false},   // 0-d
      {DType::of<double>(), {256, 512}, Order::C, "", true},  // 1 MiB, copied into a block
      {DType::of<std::int64_t>(), {4}, Order::C, "<M8[ns]", false},
      {DType::of<std::uint16_t>(), {5, 0, 3}, Order::C, "", false},  // empty
  };
  return specs;
}

/// The value of the element with C-order index `n` of array `which`, as a double.
double element_value(std::size_t which, std::int64_t n) {
  const auto x = static_cast<double>(n);
  switch (which) {
    case 0: return x * 0.5 - 3.0;
    case 1: return static_cast<double>(static_cast<std::int16_t>(n * 37 - 500));
    case 2: return x * 1.25;
    case 3: return 42.0;
    case 4: return x * 0.001;
    case 5: return x * 1e9 - 5.0;
    default: return x;
  }
}

template <class T>
void store_as(std::byte* at, double value) {
  const auto typed = static_cast<T>(value);
  std::memcpy(at, &typed, sizeof typed);
}

template <class T>
double load_as(const std::byte* at) {
  T typed{};
  std::memcpy(&typed, at, sizeof typed);
  return static_cast<double>(typed);
}

void store_element(DType dtype, std::byte* at, double value) {
  if (dtype == DType::of<float>()) store_as<float>(at, value);
  if (dtype == DType::of<double>()) store_as<double>(at, value);
  if (dtype == DType::of<std::int16_t>()) store_as<std::int16_t>(at, value);
  if (dtype == DType::of<std::int64_t>()) store_as<std::int64_t>(at, value);
  if (dtype == DType::of<std::uint8_t>()) store_as<std::uint8_t>(at, value);
  if (dtype == DType::of<std::uint16_t>()) store_as<std::uint16_t>(at, value);
}

double load_element(DType dtype, const std::byte* at) {
  if (dtype == DType::of<float>()) return load_as<float>(at);
  if (dtype == DType::of<double>()) return load_as<double>(at);
  if (dtype == DType::of<std::int16_t>()) return load_as<std::int16_t>(at);
  if (dtype == DType::of<std::int64_t>()) return load_as<std::int64_t>(at);
  if (dtype == DType::of<std::uint8_t>()) return load_as<std::uint8_t>(at);
  if (dtype == DType::of<std::uint16_t>()) return load_as<std::uint16_t>(at);
  return std::nan("");
}

/// Calls `visit(n, byte_offset)` for every element in C order (n = C-order index).
void for_each_element(std::span<const std::int64_t> shape, std::span<const std::int64_t> strides,
                      const std::function<void(std::int64_t, std::int64_t)>& visit) {
  std::int64_t total = 1;
  for (const auto extent : shape) total *= extent;
  std::vector<std::int64_t> index(shape.size(), 0);
  for (std::int64_t n = 0; n < total; ++n) {
    std::int64_t offset = 0;
    for (std::size_t k = 0; k < shape.size(); ++k) offset += index[k] * strides[k];
    visit(n, offset);
    for (std::size_t k = shape.size(); k-- > 0;) {  // odometer, last axis fastest
      if (++index[k] < shape[k]) break;
      index[k] = 0;
    }
  }
}

std::string join(std::span<const std::int64_t> values) {
  std::string out;
  for (std::size_t i = 0; i < values.size(); ++i) out += (i == 0 ? "" : ",") + std::to_string(values[i]);
  return out;
}

int produce_arrays(const Args& args) {
  if (args.size() != 1) return kUsage;
  auto queue = open_queue(args[0]);
  if (!queue) return kOpenFailed;
  const auto& specs = array_specs();
  for (std::size_t which = 0; which < specs.size(); ++which) {
    const ArraySpec& spec = specs[which];
    hakobu::Result<void, hakobu::PutError> sent;
    if (spec.copy) {
      std::int64_t total = 1;
      for (const auto extent : spec.shape) total *= extent;
      const std::size_t itemsize = spec.dtype.itemsize();
      std::vector<std::byte> data(static_cast<std::size_t>(total) * itemsize);
      for (std::int64_t n = 0; n < total; ++n) {
        store_element(spec.dtype, data.data() + static_cast<std::size_t>(n) * itemsize, element_value(which, n));
      }
      sent = queue->put_array(data.data(), spec.dtype, spec.shape);
    } else {
      auto loan = queue->loan_array(spec.dtype, spec.shape, spec.order, spec.typestr);
      if (!loan) {
        std::cerr << "peer produce-arrays: loan_array " << which << " failed: " << loan.error().message << "\n";
        return kWrongOutcome;
      }
      auto view = loan->array();
      if (!view) {
        std::cerr << "peer produce-arrays: the loan's own array view failed: " << view.error().message << "\n";
        return kWrongOutcome;
      }
      for_each_element(view->shape, view->strides, [&](std::int64_t n, std::int64_t offset) {
        store_element(spec.dtype, view->data + offset, element_value(which, n));
      });
      sent = queue->put(*loan);
    }
    if (!sent) {
      std::cerr << "peer produce-arrays: put " << which << " failed: " << sent.error().message << "\n";
      return kWrongOutcome;
    }
  }
  return finish(*queue, kOk);
}

int consume_arrays(const Args& args) {
  if (args.size() != 2) return kUsage;
  auto queue = open_queue(args[0]);
  if (!queue) return kOpenFailed;
  std::ofstream out(args[1]);
  const auto& specs = array_specs();
  for (std::size_t which = 0; which < specs.size(); ++which) {
    auto sample = queue->get();
    if (!sample) {
      std::cerr << "peer consume-arrays: get failed: " << sample.error().message << "\n";
      return kWrongOutcome;
    }
    if (sample->kind() != hakobu::MessageKind::Array) {
      std::cerr << "peer consume-arrays: message " << which << " is not an array\n";
      return kBadData;
    }
    auto view = sample->array();
    if (!view) {
      std::cerr << "peer consume-arrays: message " << which << ": " << view.error().message << "\n";
      return kBadData;
    }
    std::int64_t checked = 0;
    std::int64_t wrong = 0;
    for_each_element(view->shape, view->strides, [&](std::int64_t n, std::int64_t offset) {
      ++checked;
      if (load_element(view->dtype, view->data + offset) != element_value(which, n)) ++wrong;
    });
    if (wrong != 0) {
      std::cerr << "peer consume-arrays: message " << which << ": " << wrong << " wrong values\n";
      return kBadData;
    }
    // The test compares the layout with what it expects.
    out << "dtype=" << static_cast<int>(view->dtype.code) << "/" << static_cast<int>(view->dtype.bits) << "/"
        << view->dtype.lanes << " shape=" << join(view->shape) << " strides=" << join(view->strides)
        << " typestr=" << view->typestr << " c=" << view->is_c_contiguous() << " f=" << view->is_f_contiguous()
        << " shm=" << sample->in_shared_memory() << " values=" << checked << "\n";
  }
  out.close();
  return finish(*queue, kOk);
}

// --- single operations with an expected outcome ---------------------------------------

int get_report(const Args& args) {
  if (args.size() != 3) return kUsage;
  auto queue = open_queue(args[0]);
  if (!queue) return kOpenFailed;
  const std::uint64_t count = std::stoull(args[1]);
  std::ofstream out(args[2]);
  for (std::uint64_t i = 0; i < count; ++i) {
    auto sample = queue->get(30s);  // a watchdog: every message is there already
    if (sample) {
      out << "ok " << sample->size() << " " << hash_bytes(sample->bytes()) << "\n";
    } else {
      out << "err " << hakobu::to_string(sample.error().code) << "\n";
      if (sample.error().message.empty()) {
        std::cerr << "peer get-report: error without a message\n";
        return kWrongOutcome;
      }
    }
  }
  out.close();
  return finish(*queue, kOk);
}

int get_expect(const Args& args) {
  if (args.size() != 3 && args.size() != 4) return kUsage;
  auto queue = open_queue(args[0]);
  if (!queue) return kOpenFailed;
  const std::string& expect = args[1];
  const long long ms = std::stoll(args[2]);
  if (args.size() == 4) write_ready(args[3], "waiting");
  const auto start = std::chrono::steady_clock::now();
  auto sample = ms == 0 ? queue->try_get() : queue->get(parse_ms(args[2]));
  const auto waited = std::chrono::steady_clock::now() - start;
  if (sample) {
    if (expect != "ok") {
      std::cerr << "peer get-expect: expected " << expect << ", got a message\n";
      return kWrongOutcome;
    }
    std::string why;
    if (!read_stamp(sample->bytes(), why)) {
      std::cerr << "peer get-expect: " << why << "\n";
      return kBadData;
    }
    return finish(*queue, kOk);
  }
  const std::string_view got = hakobu::to_string(sample.error().code);
  if (got != expect || sample.error().message.empty()) {
    std::cerr << "peer get-expect: expected " << expect << ", got " << got << ": " << sample.error().message << "\n";
    return kWrongOutcome;
  }
  if (got == "Timeout" && waited < std::chrono::milliseconds(ms)) {
    std::cerr << "peer get-expect: Timeout after only "
              << std::chrono::duration_cast<std::chrono::milliseconds>(waited).count() << " ms of " << ms << "\n";
    return kWrongOutcome;
  }
  return finish(*queue, kOk);
}

int put_expect(const Args& args) {
  if (args.size() != 4 && args.size() != 5) return kUsage;
  auto queue = open_queue(args[0]);
  if (!queue) return kOpenFailed;
  const std::size_t size = std::stoull(args[1]);
  const std::string& expect = args[2];
  const long long ms = std::stoll(args[3]);
  std::vector<std::byte> message(size);
  if (size >= kStampBytes) {
    write_stamp(message, 99, 0);
  } else {
    fill_pattern(message, 99);
  }
  if (args.size() == 5) write_ready(args[4], "waiting");
  const auto start = std::chrono::steady_clock::now();
  auto sent = ms == 0 ? queue->try_put(message) : queue->put(message, parse_ms(args[3]));
  const auto waited = std::chrono::steady_clock::now() - start;
  if (sent) {
    if (expect != "ok") {
      std::cerr << "peer put-expect: expected " << expect << ", the put succeeded\n";
      return kWrongOutcome;
    }
    return finish(*queue, kOk);
  }
  const std::string_view got = hakobu::to_string(sent.error().code);
  if (got != expect || sent.error().message.empty()) {
    std::cerr << "peer put-expect: expected " << expect << ", got " << got << ": " << sent.error().message << "\n";
    return kWrongOutcome;
  }
  if (got == "Timeout" && waited < std::chrono::milliseconds(ms)) {
    std::cerr << "peer put-expect: Timeout after only "
              << std::chrono::duration_cast<std::chrono::milliseconds>(waited).count() << " ms of " << ms << "\n";
    return kWrongOutcome;
  }
  return finish(*queue, kOk);
}

int open_expect(const Args& args) {
  if (args.size() != 3) return kUsage;
  const std::map<std::string, hakobu::OpenMode> modes = {{"attach", hakobu::OpenMode::AttachOnly},
                                                         {"exclusive", hakobu::OpenMode::CreateExclusive},
                                                         {"either", hakobu::OpenMode::CreateOrAttach}};
  const auto mode = modes.find(args[1]);
  if (mode == modes.end()) return kUsage;
  const std::string& expect = args[2];
  auto queue = Queue::open(args[0], mode->second);
  if (queue) {
    // Never leave a name behind that this peer created by accident.
    const bool created = queue->is_creator();
    if (created) (void)queue->unlink();
    if (expect != "ok" || created) {
      std::cerr << "peer open: expected " << expect << ", the open succeeded" << (created ? " (and created)" : "")
                << "\n";
      return kWrongOutcome;
    }
    return finish(*queue, kOk);
  }
  const std::string_view got = hakobu::to_string(queue.error().code);
  if (got != expect || queue.error().message.empty()) {
    std::cerr << "peer open: expected " << expect << ", got " << got << ": " << queue.error().message << "\n";
    return kWrongOutcome;
  }
  return kOk;
}

int unlink_expect(const Args& args) {
  if (args.size() != 2) return kUsage;
  auto queue = open_queue(args[0]);
  if (!queue) return kOpenFailed;
  auto removed = queue->unlink();
  const std::string_view got = removed ? "ok" : hakobu::to_string(removed.error().code);
  if (got != args[1] || (!removed && removed.error().message.empty())) {
    std::cerr << "peer unlink: expected " << args[1] << ", got " << got << "\n";
    return kWrongOutcome;
  }
  return finish(*queue, kOk);
}

int echo(const Args& args) {
  if (args.size() != 3) return kUsage;
  auto in = open_queue(args[0]);
  auto out = open_queue(args[1]);
  if (!in || !out) return kOpenFailed;
  const std::uint64_t count = std::stoull(args[2]);
  for (std::uint64_t i = 0; i < count; ++i) {
    auto sample = in->get();
    if (!sample) {
      std::cerr << "peer echo: get " << i << " failed: " << sample.error().message << "\n";
      return kWrongOutcome;
    }
    if (auto sent = out->put(sample->bytes()); !sent) {
      std::cerr << "peer echo: put " << i << " failed: " << sent.error().message << "\n";
      return kWrongOutcome;
    }
  }
  in->close();
  return finish(*out, kOk);
}

int race_open(const Args& args) {
  if (args.size() != 3) return kUsage;
  // Spin rather than sleep: all racers should call open at the same moment.
  while (!std::filesystem::exists(args[1])) {
  }
  auto queue = Queue::open(args[0], hakobu::OpenMode::CreateOrAttach);
  std::ofstream out(args[2]);
  if (!queue) {
    out << "err " << hakobu::to_string(queue.error().code) << ": " << queue.error().message << "\n";
    return kWrongOutcome;
  }
  out << (queue->is_creator() ? "created" : "attached") << "\n";
  out.close();
  return finish(*queue, kOk);  // the name stays: the test removes it
}

// --- end of stream and byte capacity ---------------------------------------------------

/// The fields of STEP split at ':'.
Args step_fields(const std::string& step) {
  Args fields;
  std::stringstream in(step);
  for (std::string field; std::getline(in, field, ':');) fields.push_back(field);
  return fields;
}

int steps(const Args& args) {
  if (args.size() < 2) return kUsage;
  const std::string& name = args[0];
  std::optional<Queue> queue;
  std::map<std::uint32_t, std::uint64_t> next_seq;  // per producer id
  auto need_queue = [&](const std::string& step) {
    if (!queue) std::cerr << "peer steps: '" << step << "' before open\n";
    return queue.has_value();
  };
  for (std::size_t i = 1; i < args.size(); ++i) {
    const std::string& step = args[i];
    const Args f = step_fields(step);
    const std::string& op = f[0];
    if (op == "kill-at" && f.size() == 3) {
      // Read by the library at its first kill point: this peer has passed none yet.
      const std::string spec = f[1] + ":" + f[2];
      ::setenv("HAKOBU_KILL_AT", spec.c_str(), 1);  // NOLINT(concurrency-mt-unsafe): one thread
    } else if ((op == "open" || op == "open-sends") && f.size() == 1) {
      hakobu::QueueOptions options;
      options.sends = op == "open-sends";
      queue = open_queue(name, options);
      if (!queue) return kOpenFailed;
    } else if (op == "put" && f.size() == 4) {
      if (!need_queue(step)) return kUsage;
      const std::uint64_t count = std::stoull(f[1]);
      const std::size_t size = std::stoull(f[2]);
      const auto producer = static_cast<std::uint32_t>(std::stoul(f[3]));
      for (std::uint64_t n = 0; n < count; ++n) {
        const std::uint64_t seq = next_seq[producer]++;
        const std::size_t bytes = size == 0 ? stamped_size(producer, seq) : std::max(size, kStampBytes);
        if (auto r = put_stamped(*queue, producer, seq, bytes, false); !r) {
          std::cerr << "peer steps: put " << producer << "/" << seq << " failed: " << r.error().message << "\n";
          return kWrongOutcome;
        }
      }
    } else if (op == "get" && f.size() == 2) {
      if (!need_queue(step)) return kUsage;
      for (std::uint64_t n = std::stoull(f[1]); n > 0; --n) {
        auto sample = queue->get();
        std::string why;
        if (!sample) {
          std::cerr << "peer steps: get failed: " << sample.error().message << "\n";
          return kWrongOutcome;
        }
        if (!read_stamp(sample->bytes(), why)) {
          std::cerr << "peer steps: " << why << "\n";
          return kBadData;
        }
      }
    } else if (op == "drain" && f.size() == 2) {
      if (!need_queue(step)) return kUsage;
      std::ofstream out(f[1]);
      for (;;) {
        auto sample = queue->get();
        if (!sample) {
          out << "end " << hakobu::to_string(sample.error().code) << std::endl;  // NOLINT(performance-avoid-endl)
          break;
        }
        std::string why;
        const auto stamp = read_stamp(sample->bytes(), why);
        if (!stamp) {
          std::cerr << "peer steps: " << why << "\n";
          return kBadData;
        }
        // Flushed per line: the test may read what arrived before this peer is killed.
        out << stamp->producer << " " << stamp->seq << " " << sample->size() << std::endl;  // NOLINT
      }
    } else if (op == "ready" && f.size() == 2) {
      write_ready(f[1], "ready");
    } else if (op == "wait" && f.size() == 2) {
      while (!std::filesystem::exists(f[1])) std::this_thread::sleep_for(1ms);  // the alarm bounds it
    } else if ((op == "close" || op == "close-failed") && f.size() == 1) {
      if (!need_queue(step)) return kUsage;
      queue->close(op == "close" ? hakobu::Ending::Finished : hakobu::Ending::Failed);
    } else if (op == "hold" && f.size() == 1) {
      hold_forever();
    } else if (op == "exit" && f.size() == 1) {
      std::cout.flush();
      ::_exit(kOk);
    } else {
      std::cerr << "peer steps: unknown step '" << step << "'\n";
      return kUsage;
    }
  }
  if (!queue) return kOk;
  return finish(*queue, kOk);
}

}  // namespace

int main(int argc, char** argv) {
  ::alarm(300);  // a peer the test forgot must not live on
  if (argc < 2) {
    std::cerr << "usage: hakobu_test_peer MODE ARGS... (see peer.cpp)\n";
    return kUsage;
  }
  const std::string mode = argv[1];
  Args args;
  for (int i = 2; i < argc; ++i) {
    const std::string arg = argv[i];  // NOLINT(cppcoreguidelines-pro-bounds-pointer-arithmetic)
    if (arg == "--exit=close") {
      g_exit_style = ExitStyle::Close;
    } else if (arg == "--exit=exit") {
      g_exit_style = ExitStyle::Exit;
    } else if (arg == "--exit=_exit") {
      g_exit_style = ExitStyle::UnderscoreExit;
    } else if (arg.starts_with("--spin=")) {
      g_spin = std::chrono::nanoseconds(std::stoll(arg.substr(7)));
    } else {
      args.push_back(arg);
    }
  }
  const std::map<std::string, int (*)(const Args&)> modes = {
      {"produce", produce},
      {"consume", consume},
      {"hold-sample", hold_sample},
      {"hold-loan", hold_loan},
      {"produce-sizes", produce_sizes},
      {"consume-sizes", consume_sizes},
      {"produce-arrays", produce_arrays},
      {"consume-arrays", consume_arrays},
      {"get-report", get_report},
      {"get-expect", get_expect},
      {"put-expect", put_expect},
      {"open", open_expect},
      {"unlink", unlink_expect},
      {"echo", echo},
      {"race-open", race_open},
      {"steps", steps},
  };
  const auto found = modes.find(mode);
  if (found == modes.end()) {
    std::cerr << "hakobu_test_peer: unknown mode '" << mode << "'\n";
    return kUsage;
  }
  try {
    const int code = found->second(args);
    if (code == kUsage) std::cerr << "hakobu_test_peer " << mode << ": bad arguments\n";
    return code;
  } catch (const std::exception& error) {  // std::stoull on a bad number
    std::cerr << "hakobu_test_peer " << mode << ": " << error.what() << "\n";
    return kUsage;
  }
}
