// hakobu tests — the peer process of the store tests (test_store.cpp).
//
// `hakobu_store_peer MODE ARGS...` is started with posix_spawn (a separate
// executable, never a fork of the test), uses the public API only and inherits
// HAKOBU_DOMAIN (and HAKOBU_KILL_AT, for the kill-point tests).
//
// Modes (STORE a store name, FILE an absolute path, BYTE a number 0..255):
//   put STORE KEY SIZE BYTE            attach, publish SIZE bytes of BYTE under KEY
//   hold STORE KEY READYFILE GOFILE    attach, get KEY, write "VERSION SIZE BYTE" to
//                                      READYFILE, wait until GOFILE exists, then check
//                                      that every byte of the value is still BYTE
//   expect STORE KEY SIZE BYTE         attach, get KEY: its SIZE bytes must all be BYTE
//                                      (SIZE -1: the key must have no value)
//   wait STORE KEY SIZE BYTE           attach, wait (60 s at most) until KEY has a value:
//                                      its SIZE bytes must all be BYTE
//   put-array STORE KEY ROWS COLS      publish a ROWS x COLS float64 array (C order) with
//                                      element [i, j] = i * COLS + j (for other languages)
//   expect-array STORE KEY ROWS COLS   get KEY: an int32 array of shape (ROWS, COLS) with
//                                      element [i, j] = i * COLS + j, any strides
//   churn STORE PREFIX ROUNDS LIVE     ROUNDS times, publish a churn value (store_churn.hpp)
//                                      under the next of PREFIX0..PREFIX15, erasing each
//                                      key LIVE rounds after it was published (and the
//                                      last ones at the end): every put, get and erase
//                                      must succeed, every value read be its key's
//   read STORE PREFIX STOPFILE         until STOPFILE exists, get PREFIX0..PREFIX15 in
//                                      turn: a value found must be its key's whole churn
//                                      value
//
// Exit codes: 0 as expected; 1 bad usage; 2 open failed; 3 an operation gave
// another outcome than expected; 4 the value's bytes were not as expected.
// alarm() ends a forgotten peer after 5 minutes.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "hakobu/store.hpp"
#include "store_churn.hpp"

namespace {

bool all_equal(std::span<const std::byte> bytes, int value) {
  for (const std::byte b : bytes) {
    if (std::to_integer<int>(b) != value) return false;
  }
  return true;
}

int run(const std::vector<std::string>& args) {
  if (args.size() < 3) return 1;
  const std::string& mode = args[0];
  // receive QUEUE SIZE BYTE: attach QUEUE, get one message (60 s at most): three u64
  // (attachment, offset, size) naming a store value's memory attached to it
  // (Loan::attach(StoreValue)); its SIZE bytes there must all be BYTE. (A mode of this
  // peer, though it opens no store: the store tests start it.)
  if (mode == "receive" && args.size() == 4) {
    auto queue = hakobu::Queue::attach(args[1]);
    if (!queue) return 2;
    auto got = queue->get(std::chrono::seconds(60));
    if (!got) {
      std::fprintf(stderr, "peer: get: %s\n", got.error().message.c_str());
      return 3;
    }
    std::uint64_t fields[3]{};
    if (got->size() != sizeof fields) return 3;
    std::memcpy(fields, got->bytes().data(), sizeof fields);
    auto attached = got->attachment(fields[0]);
    if (!attached || fields[1] > attached->size() || fields[2] > attached->size() - fields[1]) return 3;
    if (fields[2] != std::stoull(args[2])) return 4;
    return all_equal(attached->subspan(fields[1], fields[2]), std::stoi(args[3])) ? 0 : 4;
  }
  auto store = hakobu::Store::attach(args[1]);
  if (!store) {
    std::fprintf(stderr, "peer: attach: %s\n", store.error().message.c_str());
    return 2;
  }
  const std::string& key = args[2];
  if (mode == "put" && args.size() == 5) {
    const std::vector<std::byte> bytes(std::stoull(args[3]), static_cast<std::byte>(std::stoi(args[4])));
    auto put = store->put(key, bytes);
    if (!put) {
      std::fprintf(stderr, "peer: put: %s\n", put.error().message.c_str());
      return 3;
    }
    return 0;
  }
  if (mode == "hold" && args.size() == 5) {
    auto value = store->get(key);
    if (!value) {
      std::fprintf(stderr, "peer: get: %s\n", value.error().message.c_str());
      return 3;
    }
    const int first = value->size() > 0 ? std::to_integer<int>(value->bytes()[0]) : -1;
    {
      std::ofstream out(args[3] + ".tmp");
      out << value->version() << " " << value->size() << " " << first << "\n";
    }
    std::filesystem::rename(args[3] + ".tmp", args[3]);
    while (!std::filesystem::exists(args[4])) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return all_equal(value->bytes(), first) ? 0 : 4;
  }
  if (mode == "wait" && args.size() == 5) {
    auto value = store->wait_for(key, std::chrono::seconds(60));
    if (!value) {
      std::fprintf(stderr, "peer: wait: %s\n", value.error().message.c_str());
      return 3;
    }
    if (value->size() != std::stoull(args[3])) return 4;
    return all_equal(value->bytes(), std::stoi(args[4])) ? 0 : 4;
  }
  if (mode == "put-array" && args.size() == 5) {
    const std::vector<std::int64_t> shape{std::stoll(args[3]), std::stoll(args[4])};
    const auto count = static_cast<std::size_t>(shape[0] * shape[1]);
    const std::size_t meta = hakobu::array_meta_size(shape.size(), 0);
    auto loan = store->loan(meta + count * sizeof(double), hakobu::MessageKind::Array);
    if (!loan) return 3;
    hakobu::write_array_meta(loan->bytes(), hakobu::DType::of<double>(), shape, {}, 0, {});
    auto* elements = reinterpret_cast<double*>(loan->bytes().data() + meta);       // NOLINT
    for (std::size_t i = 0; i < count; ++i) elements[i] = static_cast<double>(i);  // NOLINT
    auto put = store->put(key, std::move(*loan));
    if (!put) {
      std::fprintf(stderr, "peer: put: %s\n", put.error().message.c_str());
      return 3;
    }
    return 0;
  }
  if (mode == "expect-array" && args.size() == 5) {
    auto value = store->get(key);
    if (!value) {
      std::fprintf(stderr, "peer: get: %s\n", value.error().message.c_str());
      return 3;
    }
    auto view = value->array();
    if (!view) {
      std::fprintf(stderr, "peer: array: %s\n", view.error().message.c_str());
      return 3;
    }
    const std::int64_t rows = std::stoll(args[3]);
    const std::int64_t cols = std::stoll(args[4]);
    if (view->dtype != hakobu::DType::of<std::int32_t>() || view->ndim() != 2 || view->shape[0] != rows ||
        view->shape[1] != cols) {
      return 4;
    }
    for (std::int64_t i = 0; i < rows; ++i) {
      for (std::int64_t j = 0; j < cols; ++j) {
        std::int32_t element = 0;
        std::memcpy(&element, view->data + i * view->strides[0] + j * view->strides[1], sizeof element);  // NOLINT
        if (element != i * cols + j) return 4;
      }
    }
    return 0;
  }
  if (mode == "expect" && args.size() == 5) {
    const long long size = std::stoll(args[3]);
    auto value = store->get(key);
    if (size < 0) return !value && value.error().code == hakobu::StoreGetError::NotFound ? 0 : 3;
    if (!value) {
      std::fprintf(stderr, "peer: get: %s\n", value.error().message.c_str());
      return 3;
    }
    if (value->size() != static_cast<std::size_t>(size)) return 4;
    return all_equal(value->bytes(), std::stoi(args[4])) ? 0 : 4;
  }
  if (mode == "churn" && args.size() == 5) {
    const std::uint64_t rounds = std::stoull(args[3]);
    const std::uint64_t live = std::stoull(args[4]);
    const auto erase = [&](std::uint64_t i) {
      auto erased = store->erase(hakobu::test::churn_key(key, i));
      if (!erased) std::fprintf(stderr, "peer: erase: %s\n", erased.error().message.c_str());
      return static_cast<bool>(erased);
    };
    for (std::uint64_t i = 0; i < rounds; ++i) {
      const std::string name = hakobu::test::churn_key(key, i);
      auto put = store->put(name, hakobu::test::churn_value(name, i));
      if (!put) {
        std::fprintf(stderr, "peer: put of %s: %s\n", name.c_str(), put.error().message.c_str());
        return 3;
      }
      auto value = store->get(name);
      if (!value) return 3;
      if (!hakobu::test::churn_value_ok(name, value->bytes())) return 4;
      if (i >= live && !erase(i - live)) return 3;
    }
    for (std::uint64_t i = rounds > live ? rounds - live : 0; i < rounds; ++i) {
      if (!erase(i)) return 3;
    }
    return 0;
  }
  if (mode == "read" && args.size() == 4) {
    std::uint64_t found = 0;
    for (std::uint64_t i = 0; !std::filesystem::exists(args[3]); ++i) {
      const std::string name = hakobu::test::churn_key(key, i);
      auto value = store->get(name);
      if (!value) {
        if (value.error().code != hakobu::StoreGetError::NotFound) {
          std::fprintf(stderr, "peer: get: %s\n", value.error().message.c_str());
          return 3;
        }
        continue;
      }
      ++found;
      if (!hakobu::test::churn_value_ok(name, value->bytes())) {
        std::fprintf(stderr, "peer: key %s read a value that is not its own\n", name.c_str());
        return 4;
      }
    }
    std::fprintf(stderr, "peer: read %llu values\n", static_cast<unsigned long long>(found));
    return 0;
  }
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  ::alarm(300);
  const std::vector<std::string> args(argv + 1,
                                      argv + argc);  // NOLINT(cppcoreguidelines-pro-bounds-pointer-arithmetic)
  return run(args);
}
