// Sends one array through a queue using only the installed headers and library.
#include <unistd.h>

#include <cstdio>
#include <hakobu/hakobu.hpp>
#include <string>

int main() {
  const std::string name = "install-check-" + std::to_string(::getpid());
  auto queue = hakobu::Queue::create(name);
  if (!queue) return std::fprintf(stderr, "%s\n", queue.error().message.c_str()), 1;
  const double values[] = {1.5, 2.5, 3.5};
  const std::int64_t shape[] = {3};
  if (!queue->put_array(values, hakobu::DType::of<double>(), shape)) return 1;
  auto sample = queue->get();
  const bool ok = sample && sample->array() && sample->array()->shape[0] == 3;
  (void)queue->unlink();
  std::printf("installed hakobu %s: %s\n", hakobu::kVersion, ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
