// hakobu example — a producer program that streams float32 frames to a
// separately started consumer by queue name.
//
//   hakobu_producer QUEUE [FRAMES=100] [ROWS=480] [COLS=640]
//
// Each frame is built in place in shared memory (a loan) and handed over
// without a copy. Frame k holds value k + row*cols + col at [row, col], so the
// consumer can check every element. A zero-length message ends the stream.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <hakobu/hakobu.hpp>
#include <string>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s QUEUE [FRAMES=100] [ROWS=480] [COLS=640]\n", argv[0]);
    return 2;
  }
  const std::string name = argv[1];
  const long frames = argc > 2 ? std::atol(argv[2]) : 100;
  const std::int64_t rows = argc > 3 ? std::atol(argv[3]) : 480;
  const std::int64_t cols = argc > 4 ? std::atol(argv[4]) : 640;

  auto queue = hakobu::Queue::open(name);  // create or attach: either program may start first
  if (!queue) {
    std::fprintf(stderr, "cannot open queue '%s': %s\n", name.c_str(), queue.error().message.c_str());
    return 1;
  }
  const std::int64_t shape[] = {rows, cols};
  const auto start = std::chrono::steady_clock::now();
  for (long k = 0; k < frames; ++k) {
    auto loan = queue->loan_array(hakobu::DType::of<float>(), shape);
    if (!loan) {
      std::fprintf(stderr, "loan failed: %s\n", loan.error().message.c_str());
      return 1;
    }
    auto* data = reinterpret_cast<float*>(loan->array()->data);  // NOLINT(cppcoreguidelines-pro-type-reinterpret-cast)
    for (std::int64_t i = 0; i < rows * cols; ++i) data[i] = static_cast<float>(k + i % 1000);
    if (auto sent = queue->put(*loan); !sent) {
      std::fprintf(stderr, "put failed: %s\n", sent.error().message.c_str());
      return 1;
    }
  }
  if (auto sent = queue->put(std::span<const std::byte>{}); !sent) {  // end of stream
    std::fprintf(stderr, "put failed: %s\n", sent.error().message.c_str());
    return 1;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("sent %ld frames of %lldx%lld float32 in %.3f s\n", frames, static_cast<long long>(rows),
              static_cast<long long>(cols), seconds);
  return 0;
}
