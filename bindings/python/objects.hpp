// hakobu._core — the Python objects that hold shared memory: Message (a
// received message), Loan (memory being written) and Attachment (memory a
// received message holds). Shared by queue.cpp (their methods and buffer
// protocol) and codec.cpp (arrays built on them).
//
// Lifetime rules
// --------------
// * An ndarray received from a queue or a topic has one of these as its base object, so
//   the message (and its shared block) lives exactly as long as any view of it.
// * A message received inline (a small message copied out of the queue slot)
//   keeps its bytes inside the Sample, inside this object: nanobind never moves
//   an instance, so pointers into it stay valid for the object's life.
// * Every instance counts itself in `live_holders()`. At interpreter exit a
//   count above zero means some were never freed (e.g. held by a JAX array the
//   runtime keeps to the end): see at_exit() in module.cpp.
#pragma once

#include <nanobind/nanobind.h>

#include <atomic>
#include <cstddef>
#include <span>

#include "hakobu/message.hpp"

namespace hakobu::python {

/// Instances of Message, Loan and Attachment alive in this process.
std::atomic<std::ptrdiff_t>& live_holders() noexcept;
/// Instances of Queue, Topic and Subscriber alive in this process.
std::atomic<std::ptrdiff_t>& live_queues() noexcept;

/// A member that counts its owner in `counter` for as long as the owner lives.
template <std::atomic<std::ptrdiff_t>& (*counter)() noexcept>
struct LiveCount {
  LiveCount() noexcept { counter().fetch_add(1, std::memory_order_relaxed); }
  ~LiveCount() { counter().fetch_sub(1, std::memory_order_relaxed); }
  LiveCount(const LiveCount&) = delete;
  LiveCount& operator=(const LiveCount&) = delete;
};

/// A received message; the sample (and so the shared block) lives as long as
/// any view. Its bytes (and its attachments') are exported through the buffer
/// protocol, writable for a queue's message (the receiver's alone) and
/// read-only for a topic's (`read_only`: every subscriber shares the block).
struct PyMessage {
  Sample sample;
  Py_ssize_t exports = 0;
  bool read_only = false;
  LiveCount<live_holders> counted{};
};

/// Shared memory this process holds: a message being built, or the memory of
/// an array made with hakobu.empty() (attached to messages, never sent itself).
struct PyLoan {
  Loan loan;
  std::size_t data_offset = 0;  // where an array loan's elements start
  Py_ssize_t exports = 0;
  LiveCount<live_holders> counted{};
};

/// Attachment `index` of a received message; keeps the message alive.
struct PyAttachment {
  nanobind::object message;  // the PyMessage
  std::span<std::byte> bytes;
  std::size_t index = 0;
  Py_ssize_t exports = 0;
  LiveCount<live_holders> counted{};
};

}  // namespace hakobu::python
