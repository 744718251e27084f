// hakobu tests — a fresh queue for a test, and its removal however the test ends.
#pragma once

#include <gtest/gtest.h>

#include <cstddef>
#include <utility>

#include "hakobu/hakobu.hpp"
#include "test_support.hpp"

namespace hakobu::test {

/// A new queue with a name of its own in this run's domain.
inline Queue make_queue(std::size_t capacity = 8, Latency latency = Latency::Adaptive) {
  QueueOptions options;
  options.capacity = capacity;
  options.latency = latency;
  auto queue = Queue::create(unique_name("q"), options);
  EXPECT_TRUE(queue) << queue.error().message;
  return std::move(queue).value();
}

/// Unlinks the queue when the test ends, however it ends.
struct Unlinker {
  Queue& queue;
  explicit Unlinker(Queue& q) : queue(q) {}
  Unlinker(const Unlinker&) = delete;
  Unlinker& operator=(const Unlinker&) = delete;
  ~Unlinker() { (void)queue.unlink(); }  // Closed when the test unlinked it already
};

}  // namespace hakobu::test
