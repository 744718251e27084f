// hakobu example — a consumer program that receives the frames of
// hakobu_producer by queue name and checks every element.
//
//   hakobu_consumer QUEUE
//
// It reads until the producer's zero-length end message, then removes the
// queue, so nothing is left behind whichever program started first.
#include <cstdio>
#include <hakobu/hakobu.hpp>
#include <string>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s QUEUE\n", argv[0]);
    return 2;
  }
  const std::string name = argv[1];
  auto queue = hakobu::Queue::open(name);
  if (!queue) {
    std::fprintf(stderr, "cannot open queue '%s': %s\n", name.c_str(), queue.error().message.c_str());
    return 1;
  }
  long frames = 0;
  long bad = 0;
  for (;;) {
    auto sample = queue->get();
    if (!sample) {
      std::fprintf(stderr, "get failed: %s\n", sample.error().message.c_str());
      return 1;
    }
    if (sample->size() == 0) break;  // end of stream
    auto array = sample->array();
    if (!array || array->dtype != hakobu::DType::of<float>() || array->ndim() != 2) {
      std::fprintf(stderr, "unexpected message: %s\n",
                   array ? "not a 2-d float32 array" : array.error().message.c_str());
      return 1;
    }
    const auto* data =
        reinterpret_cast<const float*>(array->data);  // NOLINT(cppcoreguidelines-pro-type-reinterpret-cast)
    for (std::int64_t i = 0; i < array->size(); ++i) {
      if (data[i] != static_cast<float>(frames + i % 1000)) {
        ++bad;
        break;
      }
    }
    if (frames == 0) {
      std::printf("first frame: %lldx%lld float32, in shared memory: %s\n", static_cast<long long>(array->shape[0]),
                  static_cast<long long>(array->shape[1]), sample->in_shared_memory() ? "yes" : "no");
    }
    ++frames;
  }
  std::printf("received %ld frames, %ld with wrong values\n", frames, bad);
  // Remove the queue whoever created it: the stream is over.
  if (queue->is_creator()) {
    (void)queue->unlink();
  } else {
    (void)hakobu::Queue::remove(name);
  }
  return bad == 0 ? 0 : 1;
}
