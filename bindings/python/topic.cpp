// hakobu._core — Topic (the core of hakobu.Topic) and Subscriber (one
// subscription).
//
// Publishing takes the queue's one-call path (channel.hpp): put_object()
// publishes bytes, arrays of the built-in numeric types and small pickles, and
// the Python codec writes the rest into loans made here and publishes them with
// put_loan(); the method names are the queue's, so the codec drives either.
//
// Receiving: Subscriber.get_object() decodes as Queue.get_object does, with
// every message read-only (channel.hpp): a message's block is shared by every
// subscriber, so the arrays made here are not writeable and the Message exports
// its bytes (and attachments) read-only, so arrays the codec builds on it are
// not writeable either. The sequence and missed count of the last message
// received are kept on the Subscriber (read with the GIL held).
//
// Waiting rules (interruptible.hpp): a blocking get or publish releases the GIL
// and is cut into slices of at most 50 ms; Ctrl-C raises KeyboardInterrupt and
// takes nothing. A subscriber has only a readable side: its watch/unwatch/
// spin_until_ready take the queue's arguments (so the asyncio code of
// _queue.py drives both) and refuse `writable`.
#include "hakobu/topic.hpp"

#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>

#include "channel.hpp"
#include "convert.hpp"
#include "errors.hpp"
#include "interruptible.hpp"
#include "objects.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace hakobu::python {

namespace {

OnFull on_full_from_name(const std::string& name) {
  if (name == "drop_oldest") return OnFull::DropOldest;
  if (name == "block") return OnFull::Block;
  throw PythonError(ErrorKind::InvalidArgument, "on_full must be 'drop_oldest' or 'block', got '" + name + "'");
}

const char* on_full_name(OnFull on_full) {
  return on_full == OnFull::Block ? "block" : "drop_oldest";
}

struct PySubscriber {
  Subscriber subscriber;
  std::uint64_t sequence = 0;  // of the last message received
  std::uint64_t missed = 0;    // skipped just before it
  LiveCount<live_queues> counted{};

  [[nodiscard]] bool is_open() const noexcept { return subscriber.is_open(); }

  void close() noexcept { subscriber.close(); }

  /// Receives the next message and decodes it (see the top of this file).
  nb::object get_object(std::optional<double> timeout, bool allow_pickle) {
    auto got = wait_interruptibly(timeout, GetError::Empty, GetError::Timeout, [&](auto slice) {
      return slice.count() == 0 ? subscriber.try_get() : subscriber.get(slice);
    });
    if (!got) raise(got.error());
    sequence = got->sequence();
    missed = got->missed();
    return decode_sample(got->take_sample(), allow_pickle, /*read_only=*/true);
  }
};

void check_readable_side(bool writable) {
  if (writable) throw PythonError(ErrorKind::InvalidArgument, "a subscriber has no writable side");
}

void check_cookie(int cookie) {
  if (cookie < 0 || cookie > 0xFFFF) throw PythonError(ErrorKind::InvalidArgument, "cookie must be in [0, 65535]");
}

struct PyTopic {
  Topic topic;
  std::string domain;    // the domain's name, kept: a closed handle has no domain to ask
  Sender<Topic> sender;  // the one-call send path (channel.hpp)
  LiveCount<live_queues> counted{};

  Topic& channel() noexcept { return topic; }

  [[nodiscard]] bool is_open() const noexcept { return topic.is_open(); }

  void close() noexcept { topic.close(); }

  // Sizes arrive as Python objects: a float, a bool or a negative number is an
  // InvalidArgument naming the option, not a TypeError; the core checks ranges.
  PyTopic(const std::string& name, std::optional<bool> create, nb::handle capacity, nb::handle history,
          nb::handle max_subscribers, nb::handle inline_capacity, const std::string& domain_name, double spin_seconds) {
    check_name(name, "topic");
    check_name(domain_name, "domain", /*empty_ok=*/true);
    TopicOptions options;
    options.capacity = to_size(capacity, "capacity", SIZE_MAX, Beyond::InvalidArgument);
    options.history = to_size(history, "history", SIZE_MAX, Beyond::InvalidArgument);
    options.max_subscribers = to_size(max_subscribers, "max_subscribers", SIZE_MAX, Beyond::InvalidArgument);
    options.inline_capacity = to_size(inline_capacity, "inline_capacity", SIZE_MAX, Beyond::InvalidArgument);
    options.spin = duration(spin_seconds, "spin");
    options.domain.name = domain_name;
    auto opened = [&] {
      nb::gil_scoped_release unlocked;
      return Topic::open(name, open_mode(create), options);
    }();
    if (!opened) raise(opened.error());
    topic = std::move(*opened);
    domain = topic.domain().name();
    sender.slot_bytes = std::min(topic.stats().inline_capacity, kMaxInlineBytes);
  }

  /// A new subscription receiving up to `history` kept messages first.
  PySubscriber* subscribe(nb::handle history, const std::string& on_full) {
    SubscribeOptions options;
    options.history = to_size(history, "history", SIZE_MAX, Beyond::InvalidArgument);
    options.on_full = on_full_from_name(on_full);
    auto made = [&] {
      nb::gil_scoped_release unlocked;
      return topic.subscribe(options);
    }();
    if (!made) raise(made.error());
    return new PySubscriber{std::move(*made)};
  }

  void unlink() {
    // Unlinking closes the creator's handle, as a queue's (also when the name was removed already).
    if (auto removed = topic.unlink(); !removed) raise(removed.error());
  }

  nb::typed<nb::dict, nb::str, nb::any> stats() const {
    const TopicStats s = topic.stats();
    nb::dict out;
    out["capacity"] = s.capacity;
    out["history"] = s.history;
    out["max_subscribers"] = s.max_subscribers;
    out["inline_capacity"] = s.inline_capacity;
    out["subscribers"] = s.subscribers;
    out["published"] = s.published;
    out["creator_pid"] = s.creator_pid;
    return out;
  }
};

void remove_topic(const std::string& name, const std::string& domain) {
  // Checked here, as for queues: the core reports a bad name in removal as a system error.
  check_name(name, "topic");
  check_name(domain, "domain", /*empty_ok=*/true);
  auto removed = [&] {
    nb::gil_scoped_release unlocked;
    return Topic::remove(name, domain);
  }();
  if (!removed) raise(removed.error());
}

}  // namespace

void bind_topic(nb::module_& m) {
  auto subscriber =
      nb::class_<PySubscriber>(m, "Subscriber", "One subscription to a topic (use hakobu.Topic.subscribe)");
  subscriber
      .def("get_object", &PySubscriber::get_object, "timeout"_a.none(), "allow_pickle"_a,
           "Receives and decodes the next message in one call (read-only); a Message when the Python codec must "
           "decode it")
      .def_prop_ro(
          "sequence", [](const PySubscriber& self) { return self.sequence; },
          "The topic's position of the last message received")
      .def_prop_ro(
          "missed", [](const PySubscriber& self) { return self.missed; },
          "Messages skipped just before the last one received (drop_oldest)")
      .def_prop_ro("dropped", [](const PySubscriber& self) { return self.subscriber.dropped(); })
      .def_prop_ro("lag", [](const PySubscriber& self) { return self.subscriber.lag(); })
      .def_prop_ro("received", [](const PySubscriber& self) { return self.subscriber.received(); })
      .def_prop_ro("on_full", [](const PySubscriber& self) { return on_full_name(self.subscriber.on_full()); })
      .def_prop_ro("is_open", &PySubscriber::is_open)
      .def(
          "spin_until_ready",
          [](PySubscriber& self, bool writable, double at_most_seconds) {
            check_readable_side(writable);
            const auto at_most = duration(at_most_seconds, "at_most");
            nb::gil_scoped_release unlocked;
            return self.subscriber.spin_until_ready(at_most);
          },
          "writable"_a, "at_most"_a,
          "Spins as a blocking get would (at most `at_most` seconds, without the GIL) until a message looks "
          "published; never sleeps, takes nothing (`writable` must be False)")
      .def(
          "watch",
          [](PySubscriber& self, PyWakeSocket& socket, bool writable, int cookie) {
            check_readable_side(writable);
            check_cookie(cookie);
            auto watched = self.subscriber.watch(socket.socket, static_cast<std::uint16_t>(cookie));
            if (watched) return true;
            if (watched.error().code == WatchError::Full) return false;
            raise(watched.error());
          },
          "socket"_a, "writable"_a, "cookie"_a,
          "Publishes signal `socket` with `cookie` until unwatch; False if the table is full")
      .def(
          "unwatch",
          [](PySubscriber& self, PyWakeSocket& socket, bool writable, int cookie) {
            check_readable_side(writable);
            self.subscriber.unwatch(socket.socket, static_cast<std::uint16_t>(cookie & 0xFFFF));
          },
          "socket"_a, "writable"_a, "cookie"_a)
      .def("close", &PySubscriber::close, "Ends the subscription; waiting gets (other threads) raise Closed");

  auto topic = nb::class_<PyTopic>(m, "Topic", "A named publish/subscribe topic (use hakobu.Topic)");
  topic
      .def(nb::init<const std::string&, std::optional<bool>, nb::handle, nb::handle, nb::handle, nb::handle,
                    const std::string&, double>(),
           "name"_a, "create"_a.none(), "capacity"_a.none(), "history"_a.none(), "max_subscribers"_a.none(),
           "inline_capacity"_a.none(), "domain"_a, "spin"_a,
           "Sizes: ints (anything else is an InvalidArgument); spin in seconds")
      .def("subscribe", &PyTopic::subscribe, nb::rv_policy::take_ownership, "history"_a.none(), "on_full"_a)
      .def(
          "set_latency",
          [](PyTopic& self, const std::string& mode, double spin) { set_channel_latency(self.topic, mode, spin); },
          "mode"_a, "spin"_a, "How blocking calls of this handle and its subscribers wait (as Queue.set_latency)")
      .def_prop_ro("latency", [](const PyTopic& self) { return latency_name(self.topic.latency()); })
      .def_prop_ro("name", [](const PyTopic& self) { return self.topic.name(); })
      .def_prop_ro("domain", [](const PyTopic& self) { return self.domain; })
      .def_prop_ro("is_creator", [](const PyTopic& self) { return self.topic.is_creator(); })
      .def_prop_ro("is_open", &PyTopic::is_open)
      .def("stats", &PyTopic::stats)
      .def("close", &PyTopic::close)
      .def("unlink", &PyTopic::unlink);
  bind_sending(topic);

  m.def("remove_topic", &remove_topic, "name"_a, "domain"_a = "", "Removes a topic by name, whoever created it");
}

}  // namespace hakobu::python
