// hakobu_bench_queue — hakobu's Queue measured beside raw baselines, in one run.
//
// Method
// ------
// Two processes: the leader (this program) and a peer it starts with
// posix_spawn (this same executable with `--peer ROLE ...`). The peer attaches
// to the leader's queues by name in a private domain `bench<pid>` (passed as
// $HAKOBU_DOMAIN; the leader holds it for the whole run and it goes away at
// the end); the raw baselines use POSIX shared-memory objects the peer opens
// by name. Leader and peer are pinned to two different CPUs with
// sched_setaffinity when the machine allows it.
//
// Every hakobu figure is measured next to its baseline in the same run, in
// interleaved rounds (the order rotating), and its ratio pairs each round with
// the baseline's round next to it in time. On this 2-vCPU VM the host moves
// the vCPUs between cores that share caches and cores that do not, which
// changes a cache-line hand-off 4x and a two-copy stream 2x; pairing keeps that
// out of the ratios. Each section also says how much CPU other processes used.
//
//  1. Latency, spinning: 64-byte messages bounced back and forth; one way =
//     round trip / 2, timed per round trip on CLOCK_MONOTONIC. Baseline: two
//     64-bit words on their own cache lines in a MAP_SHARED mapping, each side
//     spinning for the other's new value. hakobu: two queues, busy loops over
//     try_put/try_get; and put/get with set_spin(60 s) (the library's own spin).
//  2. Latency, blocking: the same with no spinning at all. Baseline: FUTEX_WAIT /
//     FUTEX_WAKE on two shared 32-bit words. hakobu: put/get with set_spin(0).
//  3. Streaming with copies, 1-64 MiB messages: hakobu put(bytes) from a
//     private buffer (copy in); the peer get()s and memcpys the sample into its
//     private buffer (copy out). Baseline: a hand-written SPSC ring of 4 slots
//     in shared memory (memcpy in, memcpy out, spin-then-yield waits), and
//     memcpy between two private buffers in one process. The queue holds 2, so
//     with the block being filled and the sample being read 4 buffers
//     circulate, as in the ring. A warm-up streams first, so every shared page
//     is faulted in (in both processes) before the clock starts; GB/s counts
//     payload delivered into the consumer's buffer (1 GB = 1e9 bytes).
//  4. Hand-off of loaned messages, 1 KiB to 1 GiB: each side receives, checks
//     markers at both ends, releases the sample, loans a message of the same
//     size (its block comes back from the heap's free list, already faulted),
//     writes the markers and puts it. One way = round trip / 2, with busy try
//     loops, the default adaptive wait and set_spin(0); the sizes take turns.
//     Shown beside the time of one memcpy of the same size, which is what a
//     copying hand-off would cost at least.
//  5. Copies at every alignment, one process, all methods taking turns: put(bytes)
//     of a private buffer starting 0, 16, 64 and 2048 bytes past a page vs one
//     memcpy of the same buffer into private memory at the same offset (and,
//     for reference, into a MAP_SHARED /dev/shm mapping); then the received
//     sample copied out into a buffer 16 bytes past a page (where malloc and
//     NumPy put large buffers) vs the same memcpy from a private buffer. A copy
//     whose destination sits a little after its source modulo 4 KiB runs into
//     4K aliasing on some cores, so every offset is its own row. Targets
//     (docs/design.md): put <= 1.1x one memcpy at every offset; copy-out as fast.
//
// Private buffers are anonymous memory with ordinary pages, faulted in before
// use; hakobu uses 4 KiB /dev/shm pages like the baselines unless --huge-pages.
// The design's targets are reported as met or not met; they are never
// asserted: this is a measurement, not a test.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <hakobu/domain.hpp>
#include <hakobu/queue.hpp>
#include <hakobu/version.hpp>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "bench_support.hpp"
#include "hakobu_runs.hpp"
#include "raw_baselines.hpp"

namespace hakobu_bench {
namespace {

using hk::WaitMode;

// --- configuration --------------------------------------------------------------------

struct Config {
  bool quick = false;
  bool huge_pages = false;  // let the domain put large blocks in reserved huge pages
  std::string json_path;
  std::vector<std::string> only;  // sections to run; empty: all

  int latency_rounds = 20;
  std::size_t spin_warmup = 2'000;
  std::size_t spin_round_trips = 10'000;  // per round and method
  std::size_t block_warmup = 100;
  std::size_t block_round_trips = 1'000;
  std::size_t message_bytes = 64;

  std::vector<std::size_t> stream_sizes = {1 * kMiB, 4 * kMiB, 16 * kMiB, 64 * kMiB};
  std::uint64_t stream_volume = 2 * kGiB;  // per round and method
  int stream_rounds = 10;
  std::size_t ring_slots = 4;

  /// The streaming queue's capacity: with the block the producer is filling
  /// and the sample the consumer is reading, as many buffers circulate as the
  /// ring has slots, so both move the same working set through the caches.
  [[nodiscard]] std::size_t stream_queue_capacity() const { return ring_slots > 3 ? ring_slots - 2 : 1; }

  std::vector<std::size_t> handoff_sizes;
  std::size_t handoff_round_trips = 20'000;
  std::int64_t handoff_budget_ns = 500'000'000;  // per size and wait mode

  std::vector<std::size_t> put_copy_sizes = {64 * kMiB, 1 * kGiB};
  std::size_t put_copy_reps = 8;

  [[nodiscard]] bool runs(const std::string& section) const {
    return only.empty() || std::find(only.begin(), only.end(), section) != only.end();
  }
};

Config quick_config() {
  Config c;
  c.quick = true;
  c.latency_rounds = 6;
  c.spin_warmup = 1'000;
  c.spin_round_trips = 5'000;
  c.block_warmup = 50;
  c.block_round_trips = 300;
  c.stream_volume = 1 * kGiB;
  c.stream_rounds = 3;
  c.handoff_round_trips = 2'000;
  c.handoff_budget_ns = 200'000'000;
  c.put_copy_sizes = {64 * kMiB};
  c.put_copy_reps = 5;
  return c;
}

void print_usage() {
  std::printf(
      "usage: hakobu_bench_queue [--quick] [--json FILE] [--only SECTION[,SECTION...]] [--huge-pages]\n"
      "                          [--put-sizes MIB[,MIB...]]\n"
      "  --quick       small counts, sizes up to 64 MiB (under 30 s)\n"
      "  --json        also write every figure to FILE\n"
      "  --only        run some sections: latency, blocking, stream, handoff, put\n"
      "  --huge-pages  let hakobu put large blocks in reserved huge pages (hugetlbfs) when the\n"
      "                system has them; by default hakobu uses 4 KiB /dev/shm pages like the baselines\n"
      "  --put-sizes   message sizes of section 5 in MiB (default 64,1024; --quick: 64)\n");
}

// --- results ---------------------------------------------------------------------------

struct Figure {
  std::string measurement;
  std::string method;
  std::string size;  // "" when not per size
  std::string metric;
  double value = 0;
  std::string unit;
};

struct TargetResult {
  std::string target;
  std::string measured;
  double value = 0;
  double limit = 0;
  bool met = false;
};

class Report {
 public:
  void figure(Figure f) { figures_.push_back(std::move(f)); }
  void latency(const std::string& measurement, const std::string& method, const Summary& s) {
    figure({measurement, method, "", "one_way_median", s.median / 1e3, "us"});
    figure({measurement, method, "", "one_way_p99", s.p99 / 1e3, "us"});
    figure({measurement, method, "", "one_way_min", s.min / 1e3, "us"});
    figure({measurement, method, "", "samples", static_cast<double>(s.count), "count"});
  }
  const TargetResult& target(std::string target, std::string measured, double value, double limit, bool at_most) {
    const bool met = at_most ? value <= limit : value >= limit;
    targets_.push_back({std::move(target), std::move(measured), value, limit, met});
    return targets_.back();
  }
  [[nodiscard]] const std::vector<TargetResult>& targets() const noexcept { return targets_; }
  [[nodiscard]] const std::vector<Figure>& figures() const noexcept { return figures_; }

 private:
  std::vector<Figure> figures_;
  std::vector<TargetResult> targets_;
};

const char* verdict(bool met) {
  return met ? "met" : "NOT MET";
}

// --- JSON --------------------------------------------------------------------------------

std::string json_string(const std::string& text) {
  std::string out = "\"";
  for (const char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\u%04x", static_cast<unsigned>(c));
      out += escaped;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string json_number(double value) {
  char text[40];
  std::snprintf(text, sizeof text, "%.6g", value);
  return text;
}

void write_json(const std::string& path, const Config& config, const Machine& machine, const std::string& pinning,
                const Report& report, double seconds) {
  std::ostringstream out;
  out << "{\n  \"benchmark\": \"hakobu_bench_queue\",\n";
  out << "  \"hakobu_version\": " << json_string(hakobu::kVersion) << ",\n";
  out << "  \"mode\": " << json_string(config.quick ? "quick" : "full") << ",\n";
  out << "  \"duration_s\": " << json_number(seconds) << ",\n";
  out << "  \"machine\": {\n"
      << "    \"cpu_model\": " << json_string(machine.cpu_model) << ",\n"
      << "    \"online_cpus\": " << machine.online_cpus << ",\n"
      << "    \"allowed_cpus\": " << json_string(machine.allowed_cpus) << ",\n"
      << "    \"kernel\": " << json_string(machine.kernel) << ",\n"
      << "    \"clocksource\": " << json_string(machine.clocksource) << ",\n"
      << "    \"memory_bytes\": " << machine.memory_total << ",\n"
      << "    \"dev_shm_bytes\": " << machine.shm_total << ",\n"
      << "    \"dev_shm_free_bytes\": " << machine.shm_free << ",\n"
      << "    \"thp_shmem\": " << json_string(machine.thp_shmem) << ",\n"
      << "    \"huge_pages_reserved\": " << machine.huge_pages_total << ",\n"
      << "    \"huge_pages_free_at_start\": " << machine.huge_pages_free << ",\n"
      << "    \"huge_page_bytes\": " << machine.huge_page_bytes << ",\n"
      << "    \"load_average_at_start\": " << json_string(machine.load_average) << ",\n"
      << "    \"load_average_at_end\": " << json_string(load_average()) << "\n  },\n";
  out << "  \"method\": {\n"
      << "    \"processes\": \"leader + peer started with posix_spawn, queues attached by name in a private domain\",\n"
      << "    \"pinning\": " << json_string(pinning) << ",\n"
      << "    \"hakobu_huge_pages_allowed\": " << (config.huge_pages ? "true" : "false") << ",\n"
      << "    \"clock\": \"CLOCK_MONOTONIC\",\n"
      << "    \"one_way\": \"round trip / 2\",\n"
      << "    \"gb\": \"1e9 bytes\",\n"
      << "    \"latency_rounds\": " << config.latency_rounds << ",\n"
      << "    \"spin_round_trips_per_round\": " << config.spin_round_trips << ",\n"
      << "    \"block_round_trips_per_round\": " << config.block_round_trips << ",\n"
      << "    \"stream_rounds\": " << config.stream_rounds << ",\n"
      << "    \"stream_bytes_per_round\": " << config.stream_volume << ",\n"
      << "    \"ring_slots\": " << config.ring_slots << ",\n"
      << "    \"hakobu_queue_capacity_streaming\": " << config.stream_queue_capacity() << "\n  },\n";
  out << "  \"figures\": [\n";
  const auto& figures = report.figures();
  for (std::size_t i = 0; i < figures.size(); ++i) {
    const auto& f = figures[i];
    out << "    {\"measurement\": " << json_string(f.measurement) << ", \"method\": " << json_string(f.method)
        << ", \"size\": " << json_string(f.size) << ", \"metric\": " << json_string(f.metric)
        << ", \"value\": " << json_number(f.value) << ", \"unit\": " << json_string(f.unit) << "}"
        << (i + 1 < figures.size() ? ",\n" : "\n");
  }
  out << "  ],\n  \"targets\": [\n";
  const auto& targets = report.targets();
  for (std::size_t i = 0; i < targets.size(); ++i) {
    const auto& t = targets[i];
    out << "    {\"target\": " << json_string(t.target) << ", \"measured\": " << json_string(t.measured)
        << ", \"value\": " << json_number(t.value) << ", \"limit\": " << json_number(t.limit)
        << ", \"met\": " << (t.met ? "true" : "false") << "}" << (i + 1 < targets.size() ? ",\n" : "\n");
  }
  out << "  ]\n}\n";
  std::ofstream file(path);
  file << out.str();
  if (!file) std::fprintf(stderr, "warning: could not write %s\n", path.c_str());
}

// --- the sections -----------------------------------------------------------------------------

struct LatencyMethod {
  std::string name;
  std::function<std::vector<double>()> run_round;
};

struct LatencyResult {
  Summary pooled;        // every round trip of every round
  double ratio = 1;      // median over rounds of (this round's median / the baseline's in the same round)
  double ratio_low = 1;  // the rounds' smallest and largest such ratio
  double ratio_high = 1;
  double round_median_low = 0;  // this method's fastest and slowest round (medians)
  double round_median_high = 0;
};

/// Runs the methods' rounds interleaved (the order rotating from round to
/// round) and prints them beside the first method, the baseline. Ratios pair
/// each round with the baseline's round next to it in time: this VM's two
/// vCPUs move between host cores that share caches and cores that do not,
/// which changes a cache-line hand-off by 4x, and pairing keeps that out of
/// the ratio.
std::vector<LatencyResult> run_latency_table(const std::string& measurement, const std::vector<LatencyMethod>& methods,
                                             int rounds, Report& report) {
  const std::size_t count = methods.size();
  std::vector<std::vector<double>> pooled(count);
  std::vector<std::vector<double>> round_medians(count);
  for (int round = 0; round < rounds; ++round) {
    for (std::size_t k = 0; k < count; ++k) {
      const std::size_t i = (k + static_cast<std::size_t>(round)) % count;
      auto samples = methods[i].run_round();
      pooled[i].insert(pooled[i].end(), samples.begin(), samples.end());
      round_medians[i].push_back(median_of(std::move(samples)));
    }
  }
  std::vector<LatencyResult> results(count);
  for (std::size_t i = 0; i < count; ++i) {
    LatencyResult& r = results[i];
    r.pooled = summarize(std::move(pooled[i]));
    std::vector<double> ratios;
    for (std::size_t round = 0; round < round_medians[i].size(); ++round) {
      ratios.push_back(round_medians[i][round] / round_medians[0][round]);
    }
    r.ratio = median_of(ratios);
    r.ratio_low = *std::min_element(ratios.begin(), ratios.end());
    r.ratio_high = *std::max_element(ratios.begin(), ratios.end());
    r.round_median_low = *std::min_element(round_medians[i].begin(), round_medians[i].end());
    r.round_median_high = *std::max_element(round_medians[i].begin(), round_medians[i].end());
  }
  std::printf("   %-38s %10s %10s %10s %21s %9s %16s\n", "method", "median", "p99", "min", "rounds' medians",
              "x median", "rounds' range");
  for (std::size_t i = 0; i < count; ++i) {
    const LatencyResult& r = results[i];
    char round_range[48];
    std::snprintf(round_range, sizeof round_range, "%s - %s", time_label(r.round_median_low).c_str(),
                  time_label(r.round_median_high).c_str());
    char ratio_range[40];
    std::snprintf(ratio_range, sizeof ratio_range, "%.2fx - %.2fx", r.ratio_low, r.ratio_high);
    std::printf("   %-38s %10s %10s %10s %21s %8.2fx %16s\n", methods[i].name.c_str(),
                time_label(r.pooled.median).c_str(), time_label(r.pooled.p99).c_str(), time_label(r.pooled.min).c_str(),
                round_range, r.ratio, i == 0 ? "" : ratio_range);
    report.latency(measurement, methods[i].name, r.pooled);
    report.figure({measurement, methods[i].name, "", "fastest_round_median", r.round_median_low / 1e3, "us"});
    report.figure({measurement, methods[i].name, "", "slowest_round_median", r.round_median_high / 1e3, "us"});
    if (i > 0) {
      report.figure({measurement, methods[i].name, "", "ratio_vs_baseline_paired_rounds", r.ratio, "x"});
      report.figure({measurement, methods[i].name, "", "ratio_vs_baseline_pooled_medians",
                     r.pooled.median / results[0].pooled.median, "x"});
      report.figure({measurement, methods[i].name, "", "ratio_p99_vs_baseline_pooled",
                     r.pooled.p99 / results[0].pooled.p99, "x"});
    }
  }
  return results;
}

void latency_spinning(const Config& config, Report& report) {
  std::printf(
      "\n1. %zu-byte message, one-way latency, spinning (round trip / 2; %d interleaved rounds x %zu round "
      "trips each, after %zu warm-up;\n   x median = median over rounds of the round's median / the baseline's in "
      "the same round)\n",
      config.message_bytes, config.latency_rounds, config.spin_round_trips, config.spin_warmup);
  const auto region = SharedRegion::create(run_names().raw_prefix + "pingpong", raw::kPingPongRegionBytes);
  auto queues = hk::PingPong::create("lat-spin", 8);
  const std::vector<LatencyMethod> methods = {
      {"raw shared cache-line ping-pong",
       [&] { return raw::spin_latency(region, config.spin_warmup, config.spin_round_trips); }},
      {"hakobu try_put/try_get busy loop",
       [&] {
         return hk::latency(queues, WaitMode::TryLoop, config.message_bytes, config.spin_warmup,
                            config.spin_round_trips);
       }},
      {"hakobu put/get, set_spin(60 s)",
       [&] {
         return hk::latency(queues, WaitMode::Spin, config.message_bytes, config.spin_warmup, config.spin_round_trips);
       }},
  };
  const auto results = run_latency_table("latency_spinning", methods, config.latency_rounds, report);
  queues.unlink();
  for (std::size_t i = 1; i < results.size(); ++i) {
    const LatencyResult& r = results[i];
    char measured[128];
    std::snprintf(measured, sizeof measured, "%s: %.2fx raw (paired rounds; medians %s vs %s)", methods[i].name.c_str(),
                  r.ratio, time_label(r.pooled.median).c_str(), time_label(results[0].pooled.median).c_str());
    const auto& t =
        report.target("64-byte one-way latency, spinning: <= 2x raw (median)", measured, r.ratio, 2.0, true);
    std::printf("   target <= 2x raw, median: %-36s %.2fx  %s\n", methods[i].name.c_str(), r.ratio, verdict(t.met));
  }
}

void latency_blocking(const Config& config, Report& report) {
  std::printf(
      "\n2. %zu-byte message, one-way latency, blocking without spinning (round trip / 2; %d interleaved "
      "rounds x %zu round trips each, after %zu warm-up)\n",
      config.message_bytes, config.latency_rounds, config.block_round_trips, config.block_warmup);
  const auto region = SharedRegion::create(run_names().raw_prefix + "futex", raw::kPingPongRegionBytes);
  auto queues = hk::PingPong::create("lat-block", 8);
  const std::vector<LatencyMethod> methods = {
      {"raw futex ping-pong (FUTEX_WAIT/WAKE)",
       [&] { return raw::futex_latency(region, config.block_warmup, config.block_round_trips); }},
      {"hakobu put/get, set_spin(0)",
       [&] {
         return hk::latency(queues, WaitMode::Block, config.message_bytes, config.block_warmup,
                            config.block_round_trips);
       }},
  };
  const auto results = run_latency_table("latency_blocking", methods, config.latency_rounds, report);
  queues.unlink();
  const LatencyResult& r = results[1];
  char measured[128];
  std::snprintf(measured, sizeof measured, "%.2fx raw futex (paired rounds; medians %s vs %s)", r.ratio,
                time_label(r.pooled.median).c_str(), time_label(results[0].pooled.median).c_str());
  const auto& t =
      report.target("64-byte one-way latency, blocking: <= 1.2x raw futex (median)", measured, r.ratio, 1.2, true);
  std::printf("   target <= 1.2x raw futex, median: %.2fx  %s\n", r.ratio, verdict(t.met));
}

void streaming(const Config& config, Report& report) {
  std::printf(
      "\n3. Streaming with copies: hakobu put(bytes) + get() + memcpy out, vs a raw two-copy SPSC ring "
      "(%zu slots) and memcpy in one process\n   (GB/s = 1e9 payload bytes/s; %s per round and method; "
      "medians of %d interleaved rounds; hakobu/ring = median of each round's own ratio;\n   hakobu queue capacity "
      "%zu (+ the block being filled + the sample being read = %zu buffers, as many as the ring's slots), "
      "default wait)\n",
      config.ring_slots, size_label(config.stream_volume).c_str(), config.stream_rounds, config.stream_queue_capacity(),
      config.stream_queue_capacity() + 2);
  const std::size_t largest = *std::max_element(config.stream_sizes.begin(), config.stream_sizes.end());
  const auto ring =
      SharedRegion::create(run_names().raw_prefix + "ring", raw::kRingSlotsOffset + config.ring_slots * largest);
  const PrivateBuffer source(largest);
  const PrivateBuffer destination(largest);
  // ping: the data, pong: the acknowledgements
  auto data = hk::PingPong::create("stream", config.stream_queue_capacity());
  std::vector<TargetResult> targets;

  std::printf("   %-8s %12s %12s %12s %12s %18s %14s\n", "size", "raw ring", "hakobu", "memcpy", "hakobu/ring",
              "rounds' range", "hakobu/memcpy");
  for (const std::size_t bytes : config.stream_sizes) {
    const std::size_t count = std::max<std::size_t>(config.stream_volume / bytes, 16);
    // Enough warm-up for the peer to touch every slot and heap block a few times.
    const std::size_t warmup = std::max<std::size_t>(3 * config.ring_slots, 256 * kMiB / bytes);
    std::vector<double> ring_rates;
    std::vector<double> hakobu_rates;
    std::vector<double> memcpy_rates;
    std::vector<double> ratios;  // hakobu / ring of the same round: neighbours in time see the same machine
    for (int round = 0; round < config.stream_rounds; ++round) {
      const auto run_ring = [&] {
        ring_rates.push_back(raw::ring_throughput(ring, source, bytes, config.ring_slots, largest, warmup, count));
      };
      const auto run_hakobu = [&] {
        hakobu_rates.push_back(hk::stream(data.ping, data.pong, WaitMode::Default, source, bytes, warmup, count));
      };
      // Alternate who goes first, so a drift within a round favours neither.
      if (round % 2 == 0) {
        run_ring();
        run_hakobu();
      } else {
        run_hakobu();
        run_ring();
      }
      memcpy_rates.push_back(raw::memcpy_throughput(source, destination, bytes, count));
      ratios.push_back(hakobu_rates.back() / ring_rates.back());
    }
    const double ring_rate = median_of(ring_rates);
    const double hakobu_rate = median_of(hakobu_rates);
    const double memcpy_rate = median_of(memcpy_rates);
    const double ratio = median_of(ratios);
    const auto [lowest, highest] = std::minmax_element(ratios.begin(), ratios.end());
    const std::string size = size_label(bytes);
    char range[40];
    std::snprintf(range, sizeof range, "%.2fx - %.2fx", *lowest, *highest);
    std::printf("   %-8s %7.2f GB/s %7.2f GB/s %7.2f GB/s %11.2fx %18s %13.2fx\n", size.c_str(), ring_rate, hakobu_rate,
                memcpy_rate, ratio, range, hakobu_rate / memcpy_rate);
    report.figure({"streaming", "raw two-copy ring", size, "throughput_median", ring_rate, "GB/s"});
    report.figure(
        {"streaming", "hakobu put(bytes) + get() + memcpy out", size, "throughput_median", hakobu_rate, "GB/s"});
    report.figure({"streaming", "memcpy, one process", size, "throughput_median", memcpy_rate, "GB/s"});
    report.figure({"streaming", "hakobu", size, "ratio_vs_raw_ring_median_of_rounds", ratio, "x"});
    report.figure({"streaming", "hakobu", size, "ratio_vs_memcpy", hakobu_rate / memcpy_rate, "x"});
    for (std::size_t round = 0; round < ratios.size(); ++round) {
      report.figure({"streaming", "raw two-copy ring", size, "round_throughput", ring_rates[round], "GB/s"});
      report.figure({"streaming", "hakobu put(bytes) + get() + memcpy out", size, "round_throughput",
                     hakobu_rates[round], "GB/s"});
      report.figure({"streaming", "memcpy, one process", size, "round_throughput", memcpy_rates[round], "GB/s"});
    }
    char measured[128];
    std::snprintf(measured, sizeof measured, "%s: %.2fx raw ring (paired rounds; medians %.2f vs %.2f GB/s)",
                  size.c_str(), ratio, hakobu_rate, ring_rate);
    const auto& t =
        report.target("streaming " + size + " with copies: >= 0.9x raw two-copy ring", measured, ratio, 0.9, false);
    targets.push_back(t);
  }
  data.unlink();
  for (const auto& t : targets)
    std::printf("   target >= 0.9x raw ring: %-66s %s\n", t.measured.c_str(), verdict(t.met));
}

struct MemcpyBuffers {
  PrivateBuffer source;
  PrivateBuffer destination;
};

std::map<std::size_t, Summary> memcpy_summaries(const MemcpyBuffers& buffers, const std::vector<std::size_t>& sizes) {
  std::map<std::size_t, Summary> out;
  for (const std::size_t bytes : sizes) {
    const std::size_t reps = bytes >= 256 * kMiB ? 5 : bytes >= 16 * kMiB ? 10 : 50;
    out[bytes] = summarize(raw::memcpy_times(buffers.source, buffers.destination, bytes, reps));
  }
  return out;
}

void handoff(const Config& config, const MemcpyBuffers& buffers, Report& report) {
  std::printf(
      "\n4. Hand-off of a loaned message: loan(n), markers, put -> get, check markers, release; the reply is a "
      "fresh loan of the same size\n   (one way = round trip / 2; up to %zu round trips or %.1f s per size and "
      "wait mode, sizes taking turns in bursts of 50, after 5 warm-up round trips each; memcpy: one call, one "
      "process)\n",
      config.handoff_round_trips, static_cast<double>(config.handoff_budget_ns) / 1e9);
  struct Mode {
    WaitMode mode;
    std::string name;
    std::map<std::size_t, std::vector<double>> samples;
    double low = 1e300;
    double high = 0;
  };
  std::vector<Mode> modes = {{WaitMode::TryLoop, "try loops", {}},
                             {WaitMode::Default, "default wait", {}},
                             {WaitMode::Block, "set_spin(0)", {}}};
  auto queues = hk::PingPong::create("handoff", 2);
  for (auto& m : modes) {
    m.samples = hk::handoff(queues, m.mode, config.handoff_sizes, config.handoff_round_trips, config.handoff_budget_ns);
  }
  queues.unlink();
  const auto copies = memcpy_summaries(buffers, config.handoff_sizes);

  std::printf("   %-8s", "size");
  for (const auto& m : modes) std::printf(" %24s", (m.name + " median / p99").c_str());
  std::printf(" %12s\n", "one memcpy");
  for (const std::size_t bytes : config.handoff_sizes) {
    const std::string size = size_label(bytes);
    std::printf("   %-8s", size.c_str());
    for (auto& m : modes) {
      const Summary s = summarize(m.samples.at(bytes));
      std::printf(" %11s / %10s", time_label(s.median).c_str(), time_label(s.p99).c_str());
      const std::string method = "hakobu loan hand-off, " + m.name;
      report.figure({"handoff", method, size, "one_way_median", s.median / 1e3, "us"});
      report.figure({"handoff", method, size, "one_way_p99", s.p99 / 1e3, "us"});
      report.figure({"handoff", method, size, "samples", static_cast<double>(s.count), "count"});
      m.low = std::min(m.low, s.median);
      m.high = std::max(m.high, s.median);
    }
    const Summary& copy = copies.at(bytes);
    std::printf(" %12s\n", time_label(copy.median).c_str());
    report.figure({"handoff", "memcpy, one process", size, "time_median", copy.median / 1e3, "us"});
  }
  const std::string range = size_label(config.handoff_sizes.front()) + " to " + size_label(config.handoff_sizes.back());
  for (const auto& m : modes) {
    char measured[160];
    std::snprintf(measured, sizeof measured, "%s: medians %s to %s over %s, largest/smallest %.2fx", m.name.c_str(),
                  time_label(m.low).c_str(), time_label(m.high).c_str(), range.c_str(), m.high / m.low);
    const auto& slow =
        report.target("loaned hand-off <= 100 us at every size (" + m.name + ")", measured, m.high / 1e3, 100, true);
    // "Flat" read as: no size's median exceeds 2x the fastest size's.
    const auto& flat = report.target("loaned hand-off flat in size, max/min <= 2x (" + m.name + ")", measured,
                                     m.high / m.low, 2.0, true);
    std::printf("   target <= 100 us and flat, %-13s worst %-10s %-8s max/min %5.2fx %s\n", (m.name + ":").c_str(),
                time_label(m.high).c_str(), verdict(slow.met), m.high / m.low, verdict(flat.met));
  }
}

// Page offsets of the sources section 5 copies from: page-aligned, 16 past a
// page (glibc's mmap'ed chunks: NumPy arrays, large std::vector), a cache line
// past one, and the middle of a page.
constexpr std::size_t kSourceOffsets[] = {0, 16, 64, 2048};
// The receiver's buffer in copy-out: 16 past a page, like a fresh malloc or NumPy array.
constexpr std::size_t kReceiverOffset = 16;

void put_copy(const Config& config, Report& report) {
  std::printf(
      "\n5. Copies in and out at every source alignment (one process; median of %zu, all methods taking turns):\n"
      "   in:  put(bytes) from a private buffer at page offset X (one copy into a recycled block) vs one memcpy\n"
      "        from the same buffer into private memory at X, and into a MAP_SHARED /dev/shm mapping at X;\n"
      "   out: memcpy of the received sample into a private buffer at offset %zu vs the same memcpy from a\n"
      "        private buffer at %zu (what copying an ordinary array costs)\n",
      config.put_copy_reps, kReceiverOffset, kReceiverOffset);
  const std::size_t largest = *std::max_element(config.put_copy_sizes.begin(), config.put_copy_sizes.end());
  const std::size_t span = largest + 2 * 4096;
  const PrivateBuffer source(span);
  const PrivateBuffer destination(span);
  const auto shared = SharedRegion::create(run_names().raw_prefix + "copy", span);
  auto queue = hk::PingPong::create("put-copy", 2);  // only `ping` carries messages
  std::printf("   %-8s %6s %12s %14s %14s %8s | %12s %14s %8s\n", "size", "X", "put(bytes)", "memcpy private",
              "memcpy shm", "ratio", "copy out", "memcpy private", "ratio");
  for (const std::size_t bytes : config.put_copy_sizes) {
    const std::string size = size_label(bytes);
    double worst_in = 0;
    double worst_out = 0;
    for (const std::size_t offset : kSourceOffsets) {
      const std::byte* from = source.data() + offset;
      std::byte* to_private = destination.data() + offset;
      std::byte* to_receiver = destination.data() + kReceiverOffset;
      std::vector<double> put_times;
      std::vector<double> private_times;
      std::vector<double> shm_times;
      std::vector<double> out_times;
      std::vector<double> private_out_times;
      // Untimed first round: the block of this class is carved (and faulted) once.
      (void)hk::put_and_copy_out(queue.ping, from, bytes, to_receiver);
      for (std::size_t rep = 0; rep < config.put_copy_reps; ++rep) {
        private_times.push_back(raw::memcpy_once(to_private, from, bytes));
        const hk::CopyRound round = hk::put_and_copy_out(queue.ping, from, bytes, to_receiver);
        put_times.push_back(round.put);
        out_times.push_back(round.copy_out);
        shm_times.push_back(raw::memcpy_once(shared.data() + offset, from, bytes));
        private_out_times.push_back(raw::memcpy_once(to_receiver, source.data() + kReceiverOffset, bytes));
      }
      const double put = summarize(put_times).median;
      const double in_private = summarize(private_times).median;
      const double in_shm = summarize(shm_times).median;
      const double out = summarize(out_times).median;
      const double out_private = summarize(private_out_times).median;
      worst_in = std::max(worst_in, put / in_private);
      worst_out = std::max(worst_out, out / out_private);
      std::printf("   %-8s %6zu %12s %14s %14s %7.2fx | %12s %14s %7.2fx\n", size.c_str(), offset,
                  time_label(put).c_str(), time_label(in_private).c_str(), time_label(in_shm).c_str(), put / in_private,
                  time_label(out).c_str(), time_label(out_private).c_str(), out / out_private);
      const std::string at = size + " from offset " + std::to_string(offset);
      report.figure({"put_copy", "hakobu put(bytes)", at, "time_median", put / 1e3, "us"});
      report.figure({"put_copy", "memcpy private to private", at, "time_median", in_private / 1e3, "us"});
      report.figure({"put_copy", "memcpy private to /dev/shm", at, "time_median", in_shm / 1e3, "us"});
      report.figure({"put_copy", "hakobu put(bytes)", at, "ratio_vs_memcpy", put / in_private, "x"});
      report.figure({"put_copy", "hakobu copy out", at, "time_median", out / 1e3, "us"});
      report.figure({"put_copy", "memcpy private to private (out)", at, "time_median", out_private / 1e3, "us"});
      report.figure({"put_copy", "hakobu copy out", at, "ratio_vs_memcpy", out / out_private, "x"});
    }
    if (bytes == largest) {
      char measured[96];
      std::snprintf(measured, sizeof measured, "%s: worst of offsets 0/16/64/2048: %.2fx", size.c_str(), worst_in);
      const auto& in = report.target("put of an ordinary " + size + " buffer <= 1.1x one memcpy, every alignment",
                                     measured, worst_in, 1.1, true);
      std::snprintf(measured, sizeof measured, "%s: worst of offsets 0/16/64/2048: %.2fx", size.c_str(), worst_out);
      const auto& out = report.target("copy out of a received " + size + " message <= 1.1x one memcpy", measured,
                                      worst_out, 1.1, true);
      std::printf("   target <= 1.1x one memcpy at %s, every offset: put %.2fx %s, copy out %.2fx %s\n", size.c_str(),
                  worst_in, verdict(in.met), worst_out, verdict(out.met));
    }
  }
  queue.unlink();
}

std::string executable_path() {
  char path[4096];
  const ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
  if (n <= 0) fail("cannot read /proc/self/exe");
  return {path, static_cast<std::size_t>(n)};
}

int run_peer(int argc, char** argv) {
  const PeerArgs args = parse_peer_args(argc, argv);
  enter_peer(args);
  static const std::map<std::string, int (*)(const PeerArgs&)> roles = {
      {"raw-spin-echo", &raw::spin_echo_peer},         {"raw-futex-echo", &raw::futex_echo_peer},
      {"raw-ring-consumer", &raw::ring_consumer_peer}, {"hakobu-echo", &hk::echo_peer},
      {"hakobu-handoff", &hk::handoff_peer},           {"hakobu-sink", &hk::sink_peer},
  };
  const auto role = roles.find(args.role);
  if (role == roles.end()) fail("unknown peer role '" + args.role + "'");
  return role->second(args);
}

int run_leader(const Config& config) {
  const std::int64_t started = now_ns();
  const int pid = static_cast<int>(getpid());
  set_run_names({"bench" + std::to_string(pid), "hakobu_bench_raw." + std::to_string(pid) + "."});
  // The peer inherits the environment: both open queues in the private domain.
  setenv("HAKOBU_DOMAIN", run_names().domain.c_str(), 1);

  const Machine machine = describe_machine();
  const std::vector<int> cpus = allowed_cpus();
  std::string pinning;
  int peer_cpu = -1;
  if (cpus.size() >= 2 && pin_to_cpu(cpus[0])) {
    peer_cpu = cpus[1];
    pinning = "leader pinned to CPU " + std::to_string(cpus[0]) + ", peer pinned to CPU " + std::to_string(peer_cpu) +
              " (sched_setaffinity)";
  } else {
    pinning = "not pinned (fewer than two CPUs allowed)";
  }
  configure_peers(peer_cpu, executable_path());
  start_watchdog();

  std::printf("hakobu_bench_queue %s: hakobu %s Queue beside raw shared-memory baselines, two processes\n",
              config.quick ? "--quick" : "(full)", hakobu::kVersion);
  std::printf(
      "machine: %s, %d online CPUs (allowed %s), %s, RAM %s, /dev/shm %s (%s free), THP for shmem: %s, "
      "reserved huge pages %llu of %s (%llu free), clocksource %s, load average %s\n",
      machine.cpu_model.c_str(), machine.online_cpus, machine.allowed_cpus.c_str(), machine.kernel.c_str(),
      size_label(machine.memory_total).c_str(), size_label(machine.shm_total).c_str(),
      size_label(machine.shm_free).c_str(), machine.thp_shmem.c_str(),
      static_cast<unsigned long long>(machine.huge_pages_total), size_label(machine.huge_page_bytes).c_str(),
      static_cast<unsigned long long>(machine.huge_pages_free), machine.clocksource.c_str(),
      machine.load_average.c_str());
  std::printf(
      "method: peer = this program started with posix_spawn, attaching by name to queues of the private "
      "domain '%s';\n        %s; baselines run in the same run, interleaved; one way = round trip / 2\n",
      run_names().domain.c_str(), pinning.c_str());
  std::fflush(stdout);

  Config effective = config;
  effective.handoff_sizes.clear();
  const std::size_t largest_handoff = config.quick ? 64 * kMiB : 1 * kGiB;
  for (std::size_t bytes = kKiB; bytes <= largest_handoff; bytes *= 4) effective.handoff_sizes.push_back(bytes);

  // The leader holds the private domain for the whole run, so blocks faulted
  // in by one section stay cached for the next, and the domain (with its
  // files) goes away when this handle and the last queue do.
  hakobu::DomainOptions domain_options;
  domain_options.name = run_names().domain;
  domain_options.huge_pages = config.huge_pages ? hakobu::HugePages::Auto : hakobu::HugePages::Never;
  std::optional<hakobu::Domain> domain;
  {
    auto opened = hakobu::Domain::open(domain_options);
    if (!opened) fail("cannot open the domain " + domain_options.name + ": " + opened.error().message);
    domain.emplace(std::move(opened).value());
  }
  const bool domain_huge = domain->stats().huge_pages;
  std::printf("hakobu heap: 4 KiB /dev/shm pages%s\n",
              domain_huge         ? " and reserved huge pages for blocks of 2 MiB and more (--huge-pages)"
              : config.huge_pages ? " only (--huge-pages given, but the system offers no usable huge pages)"
                                  : ", like the baselines (huge pages not used; see --huge-pages)");

  Report report;
  const NoiseMeter whole_run;
  // Runs one section and says how much else the machine was doing meanwhile.
  const auto section = [&](const std::string& key, const std::function<void()>& body) {
    NoiseMeter noise;
    body();
    const double other = noise.other_share();
    const double steal = noise.steal_share();
    std::printf("   (meanwhile other processes used %.0f%% of the CPUs' time; hypervisor steal %.0f%%)\n", 100 * other,
                100 * steal);
    report.figure({"noise", key, "", "other_processes_cpu_share", 100 * other, "%"});
    report.figure({"noise", key, "", "steal_share", 100 * steal, "%"});
    std::fflush(stdout);
  };
  if (config.runs("latency")) section("latency", [&] { latency_spinning(effective, report); });
  if (config.runs("blocking")) section("blocking", [&] { latency_blocking(effective, report); });
  if (config.runs("stream")) section("stream", [&] { streaming(effective, report); });
  if (config.runs("handoff") || config.runs("put")) {
    const std::size_t largest = effective.handoff_sizes.back();
    if (config.runs("handoff")) {
      const MemcpyBuffers buffers{PrivateBuffer(largest), PrivateBuffer(largest)};
      section("handoff", [&] { handoff(effective, buffers, report); });
    }
    if (config.runs("put")) section("put", [&] { put_copy(effective, report); });
  }
  const double other_share = whole_run.other_share();
  const hakobu::DomainStats heap = domain->stats();
  report.figure({"heap", "hakobu", "", "bytes_carved", static_cast<double>(heap.heap_used), "bytes"});
  report.figure({"heap", "hakobu", "", "huge_page_bytes_carved", static_cast<double>(heap.huge_page_used), "bytes"});
  domain.reset();  // the last handle: the domain's files go now

  const double seconds = static_cast<double>(now_ns() - started) / 1e9;
  std::printf("\nTargets (from docs/design.md, measured as ratios in this run):\n");
  std::size_t met = 0;
  for (const auto& t : report.targets()) {
    std::printf("   %-8s %-66s %s\n", verdict(t.met), t.target.c_str(), t.measured.c_str());
    met += t.met ? 1 : 0;
  }
  std::printf("   %zu of %zu met\n", met, report.targets().size());

  // Every queue was unlinked and every handle is gone: the domain must be too.
  const auto left = leftover_files();
  if (left.empty()) {
    std::printf("\nshared memory: nothing of this run is left (domain %s removed)\n", run_names().domain.c_str());
  } else {
    std::printf("\nshared memory: %zu file(s) of this run were left behind and are now removed:", left.size());
    for (const auto& path : left) std::printf(" %s", path.c_str());
    std::printf("\n");
    remove_leftovers();
  }
  std::printf(
      "finished in %.1f s; other processes used %.0f%% of the CPUs' time during the run; load average at the "
      "end %s\n",
      seconds, 100 * other_share, load_average().c_str());
  if (!config.json_path.empty()) {
    write_json(config.json_path, config, machine, pinning, report, seconds);
    std::printf("figures written to %s\n", config.json_path.c_str());
  }
  return left.empty() ? 0 : 1;
}

}  // namespace
}  // namespace hakobu_bench

int main(int argc, char** argv) {
  using namespace hakobu_bench;
  if (argc > 1 && std::strcmp(argv[1], "--peer") == 0) return run_peer(argc, argv);

  Config config;
  std::string json_path;
  std::string only;
  bool huge_pages = false;
  std::vector<std::size_t> put_sizes;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--quick") {
      config = quick_config();
    } else if (arg == "--json" && i + 1 < argc) {
      json_path = argv[++i];
    } else if (arg == "--only" && i + 1 < argc) {
      only = argv[++i];
    } else if (arg == "--huge-pages") {
      huge_pages = true;
    } else if (arg == "--put-sizes" && i + 1 < argc) {
      std::stringstream list(argv[++i]);
      put_sizes.clear();
      for (std::string mib; std::getline(list, mib, ',');) {
        const long value = std::strtol(mib.c_str(), nullptr, 10);
        if (value <= 0) {
          print_usage();
          return 2;
        }
        put_sizes.push_back(static_cast<std::size_t>(value) * kMiB);
      }
    } else if (arg == "--help" || arg == "-h") {
      print_usage();
      return 0;
    } else {
      print_usage();
      return 2;
    }
  }
  config.json_path = json_path;
  config.huge_pages = huge_pages;
  if (!put_sizes.empty()) config.put_copy_sizes = put_sizes;
  std::stringstream sections(only);
  for (std::string section; std::getline(sections, section, ',');) {
    if (!section.empty()) config.only.push_back(section);
  }
  return run_leader(config);
}
