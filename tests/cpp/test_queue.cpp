// Unit tests: Queue in one process — opening, FIFO order, the three forms of
// put and get, loans and samples, arrays, close and unlink, and concurrent
// producers and consumers as threads (run these under ThreadSanitizer; the
// multi-process behaviour is in test_multiprocess.cpp).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <numeric>
#include <thread>
#include <vector>

#include "domain/domain_state.hpp"
#include "hakobu/hakobu.hpp"
#include "test_queues.hpp"
#include "test_support.hpp"

namespace {

using hakobu::test::make_queue;
using hakobu::test::Unlinker;
using namespace std::chrono_literals;
using hakobu::GetError;
using hakobu::PutError;
using hakobu::Queue;

std::span<const std::byte> bytes_of(const auto& value) {
  return std::as_bytes(std::span(&value, 1));
}

template <class T>
T value_of(const hakobu::Sample& sample) {
  T out{};
  EXPECT_EQ(sample.size(), sizeof(T));
  std::memcpy(&out, sample.bytes().data(), sizeof(T));
  return out;
}

TEST(Queue, OpenModes) {
  auto q = make_queue();
  Unlinker cleanup{q};
  EXPECT_TRUE(q.is_creator());
  auto attached = Queue::attach(q.name());
  ASSERT_TRUE(attached) << attached.error().message;
  EXPECT_FALSE(attached->is_creator());
  auto again = Queue::create(q.name());
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, hakobu::OpenError::AlreadyExists);
  auto either = Queue::open(q.name());
  ASSERT_TRUE(either);
  EXPECT_FALSE(either->is_creator());
  auto missing = Queue::attach("no-such-queue");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, hakobu::OpenError::NotFound);
  auto removed = attached->unlink();
  ASSERT_FALSE(removed);
  EXPECT_EQ(removed.error().code, hakobu::UnlinkError::NotCreator);
}

TEST(Queue, RejectsBadNamesAndOptions) {
  for (const std::string& bad : std::vector<std::string>{"", "a/b", "..", ".hidden", std::string(65, 'x')}) {
    auto q = Queue::open(bad);
    ASSERT_FALSE(q) << bad;
    EXPECT_EQ(q.error().code, hakobu::OpenError::InvalidName);
  }
  hakobu::QueueOptions options;
  options.capacity = 0;
  EXPECT_EQ(Queue::create("zero", options).error().code, hakobu::OpenError::InvalidArgument);
  options.capacity = 4;
  options.inline_capacity = 4096;
  EXPECT_EQ(Queue::create("big-inline", options).error().code, hakobu::OpenError::InvalidArgument);
}

TEST(Queue, FifoAndCapacity) {
  auto q = make_queue(5);  // rounded up to 8
  Unlinker cleanup{q};
  EXPECT_EQ(q.capacity(), 8U);
  for (int i = 0; i < 8; ++i) ASSERT_TRUE(q.try_put(bytes_of(i)));
  EXPECT_EQ(q.size(), 8U);
  auto full = q.try_put(bytes_of(99));
  ASSERT_FALSE(full);
  EXPECT_EQ(full.error().code, PutError::Full);
  for (int i = 0; i < 8; ++i) {
    auto s = q.try_get();
    ASSERT_TRUE(s);
    EXPECT_EQ(value_of<int>(*s), i);
  }
  auto empty = q.try_get();
  ASSERT_FALSE(empty);
  EXPECT_EQ(empty.error().code, GetError::Empty);
  // Many laps around the ring keep order.
  for (int i = 0; i < 1000; ++i) {
    ASSERT_TRUE(q.put(bytes_of(i)));
    auto s = q.get();
    ASSERT_TRUE(s);
    ASSERT_EQ(value_of<int>(*s), i);
  }
}

TEST(Queue, TimeoutsExpire) {
  auto q = make_queue(1);
  Unlinker cleanup{q};
  auto got = q.get(20ms);
  ASSERT_FALSE(got);
  EXPECT_EQ(got.error().code, GetError::Timeout);
  ASSERT_TRUE(q.put(bytes_of(1)));
  auto put = q.put(bytes_of(2), 20ms);
  ASSERT_FALSE(put);
  EXPECT_EQ(put.error().code, PutError::Timeout);
  EXPECT_EQ(q.size(), 1U) << "a failed put leaves the queue as it was";
}

TEST(Queue, LargeMessagesTravelInBlocksAndComeBack) {
  auto q = make_queue();
  Unlinker cleanup{q};
  auto domain = q.domain();
  std::vector<std::byte> big(3 << 20);
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<std::byte>(i * 7);
  ASSERT_TRUE(q.put(big));
  EXPECT_EQ(domain.stats().live_blocks, 1U);
  {
    auto s = q.get();
    ASSERT_TRUE(s);
    EXPECT_TRUE(s->in_shared_memory());
    ASSERT_EQ(s->size(), big.size());
    EXPECT_EQ(std::memcmp(s->bytes().data(), big.data(), big.size()), 0);
    s->bytes()[0] = std::byte{1};  // the receiver owns it: writable
  }
  EXPECT_EQ(domain.stats().live_blocks, 0U) << "released samples return their block";
}

TEST(Queue, SmallMessagesRideInline) {
  auto q = make_queue();
  Unlinker cleanup{q};
  std::vector<std::byte> exact(hakobu::kMaxInlineBytes, std::byte{5});
  ASSERT_TRUE(q.put(exact));
  auto s = q.get();
  ASSERT_TRUE(s);
  EXPECT_FALSE(s->in_shared_memory());
  EXPECT_EQ(s->size(), exact.size());
  EXPECT_EQ(q.domain().stats().live_blocks, 0U);
  ASSERT_TRUE(q.put(std::span<const std::byte>{}));  // empty messages are messages
  auto e = q.get();
  ASSERT_TRUE(e);
  EXPECT_EQ(e->size(), 0U);
}

TEST(Queue, LoansAreSentWithoutACopy) {
  auto q = make_queue();
  Unlinker cleanup{q};
  auto loan = q.loan(1 << 20);
  ASSERT_TRUE(loan);
  std::byte* where = loan->bytes().data();
  std::memset(where, 0x5A, 1 << 20);
  ASSERT_TRUE(q.put(*loan));
  EXPECT_FALSE(loan->valid()) << "a sent loan is consumed";
  auto again = q.put(*loan);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, PutError::Invalid);
  auto s = q.get();
  ASSERT_TRUE(s);
  EXPECT_EQ(s->bytes().data(), where) << "the receiver sees the very block the sender wrote";
  EXPECT_EQ(s->bytes()[12345], std::byte{0x5A});
}

TEST(Queue, DroppedLoansAndFailedPutsKeepNothing) {
  auto q = make_queue(1);
  Unlinker cleanup{q};
  auto domain = q.domain();
  { auto loan = q.loan(1 << 16); }
  EXPECT_EQ(domain.stats().live_blocks, 0U);
  ASSERT_TRUE(q.put(bytes_of(1)));
  auto loan = q.loan(1 << 16);
  ASSERT_TRUE(loan);
  auto full = q.try_put(*loan);
  ASSERT_FALSE(full);
  EXPECT_TRUE(loan->valid()) << "a failed put leaves the loan with the caller";
  std::vector<std::byte> big(1 << 16);
  ASSERT_FALSE(q.try_put(big));
  EXPECT_EQ(domain.stats().live_blocks, 1U) << "only the kept loan holds a block";
}

TEST(Queue, ArraysKeepTypeShapeAndValues) {
  auto q = make_queue();
  Unlinker cleanup{q};
  // Small (inline) and large (block) arrays.
  for (const std::int64_t rows : {2, 300}) {
    const std::int64_t shape[] = {rows, 5};
    std::vector<float> data(static_cast<std::size_t>(rows * 5));
    std::iota(data.begin(), data.end(), 0.5F);
    ASSERT_TRUE(q.put_array(data.data(), hakobu::DType::of<float>(), shape));
    auto s = q.get();
    ASSERT_TRUE(s);
    auto view = s->array();
    ASSERT_TRUE(view) << view.error().message;
    EXPECT_EQ(view->dtype, hakobu::DType::of<float>());
    ASSERT_EQ(view->ndim(), 2U);
    EXPECT_EQ(view->shape[0], rows);
    EXPECT_EQ(view->shape[1], 5);
    EXPECT_TRUE(view->is_c_contiguous());
    EXPECT_EQ(std::memcmp(view->data, data.data(), data.size() * sizeof(float)), 0);
  }
  auto loan = q.loan_array(hakobu::DType::of<std::int16_t>(), std::vector<std::int64_t>{4, 3}, hakobu::Order::F);
  ASSERT_TRUE(loan);
  ASSERT_TRUE(q.put(*loan));
  auto s = q.get();
  ASSERT_TRUE(s);
  auto view = s->array();
  ASSERT_TRUE(view);
  EXPECT_TRUE(view->is_f_contiguous());
  auto raw = q.put(bytes_of(1));
  ASSERT_TRUE(raw);
  auto r = q.get();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->array().error().code, hakobu::ArrayError::NotAnArray);
}

TEST(Queue, ArrayMetadataMustFitItsLimits) {
  auto q = make_queue();
  Unlinker cleanup{q};
  const std::int64_t shape[] = {2};
  const std::string long_type(hakobu::kMaxTypestrBytes + 1, 'x');
  auto refused = q.loan_array(hakobu::DType::of<double>(), shape, hakobu::Order::C, long_type);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, hakobu::LoanError::InvalidArgument);
  const std::vector<std::int64_t> too_many_dims(hakobu::kMaxArrayDims + 1, 1);
  EXPECT_EQ(q.loan_array(hakobu::DType::of<double>(), too_many_dims).error().code, hakobu::LoanError::InvalidArgument);
}

TEST(Queue, ManyHeldSamplesGrowTheHoldingsTable) {
  hakobu::QueueOptions options;
  options.capacity = 4096;
  options.inline_capacity = 0;  // every message takes a block
  auto q = Queue::create(hakobu::test::unique_name("held"), options);
  ASSERT_TRUE(q);
  Unlinker cleanup{*q};
  std::vector<hakobu::Sample> held;
  for (int i = 0; i < 3000; ++i) {
    ASSERT_TRUE(q->put(bytes_of(i)));
    auto s = q->get();
    ASSERT_TRUE(s);
    held.push_back(std::move(*s));
  }
  for (int i = 0; i < 3000; ++i) ASSERT_EQ(value_of<int>(held[static_cast<std::size_t>(i)]), i);
  const auto stats = q->domain().stats();
  ASSERT_EQ(stats.processes.size(), 1U);
  EXPECT_EQ(stats.processes[0].held_blocks, 3000U);
  held.clear();
  EXPECT_EQ(q->domain().stats().processes[0].held_blocks, 0U);
}

TEST(Queue, CloseWakesThisProcessesWaiters) {
  auto q = make_queue();
  Unlinker cleanup{q};
  auto other = Queue::attach(q.name());
  ASSERT_TRUE(other);
  std::atomic<int> code{-1};
  std::thread waiter([&] {
    auto s = other->get();
    code = s ? 100 : static_cast<int>(s.error().code);
  });
  std::this_thread::sleep_for(50ms);
  other->close();
  waiter.join();  // a deadlock here would hang: ctest's timeout is the watchdog
  EXPECT_EQ(code.load(), static_cast<int>(GetError::Closed));
  EXPECT_FALSE(other->is_open() && other->try_get()) << "a closed handle refuses work";
  EXPECT_EQ(other->try_put(bytes_of(1)).error().code, PutError::Closed);
}

TEST(Queue, UnlinkWakesWaitersAndFreesLeftovers) {
  auto q = make_queue();
  auto domain = q.domain();
  auto consumer = Queue::attach(q.name());
  ASSERT_TRUE(consumer);
  std::atomic<int> code{-1};
  std::thread waiter([&] {
    auto s = consumer->get();
    code = s ? 100 : static_cast<int>(s.error().code);
  });
  std::this_thread::sleep_for(50ms);
  std::vector<std::byte> big(1 << 20);
  ASSERT_TRUE(q.unlink());
  waiter.join();
  EXPECT_EQ(code.load(), static_cast<int>(GetError::Unlinked));
  EXPECT_FALSE(Queue::attach(q.name())) << "the name is gone";
  auto late = consumer->put(big);
  ASSERT_FALSE(late);
  EXPECT_EQ(late.error().code, PutError::Unlinked);
  consumer = Queue();
  EXPECT_EQ(domain.stats().live_blocks, 0U);
  EXPECT_EQ(domain.stats().named_objects, 0U);
}

TEST(Queue, MessagesLeftAtUnlinkAreFreedByTheLastToClose) {
  auto q = make_queue();
  auto domain = q.domain();
  std::vector<std::byte> big(1 << 20);
  ASSERT_TRUE(q.put(big));
  ASSERT_TRUE(q.put(big));
  auto reader = Queue::attach(q.name());
  ASSERT_TRUE(reader);
  ASSERT_TRUE(q.unlink());
  auto s = reader->get(1s);
  ASSERT_TRUE(s) << "messages sent before unlink can still be received";
  EXPECT_EQ(domain.stats().live_blocks, 2U);
  s->reset();
  reader = Queue();
  q = Queue();
  EXPECT_EQ(domain.stats().live_blocks, 0U);
}

TEST(Queue, RemoveByNameIsForAdministration) {
  auto q = make_queue();
  EXPECT_TRUE(Queue::remove(q.name()));
  EXPECT_EQ(Queue::remove(q.name()).error().code, hakobu::UnlinkError::NotFound);
  EXPECT_EQ(q.try_put(bytes_of(1)).error().code, PutError::Unlinked);
}

TEST(Queue, HandlesInheritedAcrossForkAreClosedInTheChild) {
  auto q = make_queue();
  Unlinker cleanup{q};
  std::vector<std::byte> big(1 << 20, std::byte{3});
  ASSERT_TRUE(q.put(big));
  const auto parent_slot = q.domain().process_slot();
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    int code = 0;
    {
      auto inherited = q.try_get();
      if (inherited || inherited.error().code != GetError::Closed) code |= 1;
      auto fresh = Queue::attach(q.name());  // the child attaches as itself
      if (!fresh) {
        code |= 2;
      } else {
        if (fresh->domain().process_slot() == parent_slot) code |= 4;
        auto s = fresh->get(5s);
        if (!s || s->size() != big.size() || s->bytes()[100] != std::byte{3}) code |= 8;
      }
    }
    ::_exit(code);  // the parent's inherited objects are not destroyed here
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_EQ(q.size(), 0U);
  EXPECT_EQ(q.domain().stats().live_blocks, 0U) << "the child released what it received";
  EXPECT_EQ(q.domain().stats().processes.size(), 1U) << "the child detached";
}

// A child of fork() must not keep its parent's queue open: if the parent dies,
// an inherited descriptor would hold the parent's lifecycle lock, and the last
// process to close an unlinked queue would not know it is the last.
TEST(Queue, AForkedChildDoesNotKeepAnUnlinkedQueuesMessagesAlive) {
  auto q = make_queue();
  auto domain = q.domain();
  std::vector<std::byte> big(1 << 20, std::byte{5});
  ASSERT_TRUE(q.put(big));
  int to_grandchild[2];
  int ready[2];
  ASSERT_EQ(::pipe(to_grandchild), 0);
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t parent = ::fork();
  ASSERT_GE(parent, 0);
  if (parent == 0) {
    // Another process with the queue open, which forks a child and dies.
    auto mine = Queue::attach(q.name());
    if (!mine) ::_exit(1);
    const pid_t child = ::fork();
    if (child == 0) {
      char go = 0;
      (void)::write(ready[1], "r", 1);         // running: the fork handlers have run
      (void)::read(to_grandchild[0], &go, 1);  // holds what it inherited until told
      ::_exit(0);
    }
    char running = 0;
    if (child < 0 || ::read(ready[0], &running, 1) != 1) ::_exit(2);
    ::_exit(0);  // dies without closing: what it had open lives on only in the child
  }
  int status = 0;
  ASSERT_EQ(::waitpid(parent, &status, 0), parent);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  // The dead process looks dead, though its child lives on: what it held can be reclaimed.
  EXPECT_GE(domain.collect_garbage(), 1U);
  for (const auto& process : domain.stats().processes) EXPECT_NE(process.pid, parent);
  ASSERT_TRUE(q.unlink());
  q = Queue();  // the last process to close the unlinked queue frees what is left in it
  EXPECT_EQ(domain.stats().live_blocks, 0U) << "the message left in the queue was freed while the child lives";
  (void)::write(to_grandchild[1], "x", 1);
  for (const int fd : {to_grandchild[0], to_grandchild[1], ready[0], ready[1]}) ::close(fd);
  // The grandchild is not ours to wait for; it exits on its own.
}

TEST(Queue, SlotGenerationsDoNotWrapSoon) {
  using hakobu::detail::make_token;
  EXPECT_NE(make_token(5, 0), make_token(5, 4096)) << "a slot reused 4096 times keeps telling its owners apart";
  EXPECT_NE(make_token(5, 0), make_token(5, 65536));
  EXPECT_NE(make_token(5, 1), make_token(6, 1));
}

TEST(Queue, ArraysInSharedMemoryAreSentByReference) {
  auto q = make_queue();
  Unlinker cleanup{q};
  auto domain = q.domain();
  {
    // A buffer of the domain, filled in place, then sent as an array without a copy.
    auto buffer = domain.loan(10 * sizeof(double));
    ASSERT_TRUE(buffer);
    auto* values = reinterpret_cast<double*>(buffer->bytes().data());
    for (int i = 0; i < 10; ++i) values[i] = i * 1.5;
    const std::int64_t shape[] = {5};
    const std::int64_t strides[] = {2 * sizeof(double)};  // every other element
    auto message = q.loan_array_ref(hakobu::DType::of<double>(), shape, strides, sizeof(double));
    ASSERT_TRUE(message);
    ASSERT_TRUE(message->attach(*buffer));
    ASSERT_TRUE(q.put(*message));
    auto sample = q.get();
    ASSERT_TRUE(sample);
    auto view = sample->array();
    ASSERT_TRUE(view) << view.error().message;
    EXPECT_EQ(view->data, buffer->bytes().data() + sizeof(double)) << "the receiver sees the sender's memory";
    EXPECT_EQ(view->strides[0], 16);
    EXPECT_EQ(reinterpret_cast<const double*>(view->data)[2], 4.5);  // view element 1 is buffer[3]
    buffer = hakobu::Loan();  // the sender lets go: the message keeps the data alive
    EXPECT_EQ(reinterpret_cast<const double*>(view->data)[8], 13.5);  // view element 4 is buffer[9]
    EXPECT_EQ(domain.stats().live_blocks, 2U);
  }
  EXPECT_EQ(domain.stats().live_blocks, 0U) << "message and data return when the last holder lets go";
}

TEST(Queue, ReceivedArraysAreForwardedWithoutACopy) {
  auto first = make_queue();
  Unlinker cleanup_first{first};
  auto second = make_queue();
  Unlinker cleanup_second{second};
  auto domain = first.domain();
  std::vector<std::int32_t> data(1000);
  std::iota(data.begin(), data.end(), 0);
  const std::int64_t shape[] = {1000};
  ASSERT_TRUE(first.put_array(data.data(), hakobu::DType::of<std::int32_t>(), shape));
  auto received = first.get();
  ASSERT_TRUE(received);
  auto view = received->array();
  ASSERT_TRUE(view);
  // Forward the last 10 elements, reversed.
  const auto offset = (view->data - received->bytes().data()) + 999 * 4;
  const std::int64_t tail_shape[] = {10};
  const std::int64_t tail_strides[] = {-4};
  auto forward = second.loan_array_ref(hakobu::DType::of<std::int32_t>(), tail_shape, tail_strides, offset);
  ASSERT_TRUE(forward);
  ASSERT_TRUE(forward->attach(*received));
  ASSERT_TRUE(second.put(*forward));
  received->reset();  // the forwarded message keeps the block alive
  auto again = second.get();
  ASSERT_TRUE(again);
  auto tail = again->array();
  ASSERT_TRUE(tail) << tail.error().message;
  EXPECT_EQ(reinterpret_cast<const std::int32_t*>(tail->data)[0], 999);
  EXPECT_EQ(*(reinterpret_cast<const std::int32_t*>(tail->data) - 9), 990);
  // Forward it once more: its data is its attachment 0.
  auto third = first.loan_array_ref(hakobu::DType::of<std::int32_t>(), tail_shape, tail_strides, offset);
  ASSERT_TRUE(third);
  ASSERT_TRUE(third->attach(*again, 0));
  ASSERT_TRUE(first.put(*third));
  again->reset();
  {
    auto last = first.get();
    ASSERT_TRUE(last);
    EXPECT_EQ(reinterpret_cast<const std::int32_t*>(last->array()->data)[0], 999);
  }
  EXPECT_EQ(domain.stats().live_blocks, 0U);
}

TEST(Queue, AttachmentsAreChecked) {
  auto q = make_queue();
  Unlinker cleanup{q};
  const std::int64_t shape[] = {4};
  const std::int64_t strides[] = {8};
  auto unattached = q.loan_array_ref(hakobu::DType::of<double>(), shape, strides, 0);
  ASSERT_TRUE(unattached);
  auto refused = q.put(*unattached);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, PutError::Invalid) << "an array whose data was never attached";
  auto small = q.domain().loan(16);  // too small for 4 doubles
  ASSERT_TRUE(small);
  ASSERT_TRUE(unattached->attach(*small));
  EXPECT_EQ(unattached->attach(*small).error().code, hakobu::AttachError::NoRoom);
  EXPECT_EQ(q.put(*unattached).error().code, PutError::Invalid) << "elements beyond the attached block";
  ASSERT_TRUE(q.put(bytes_of(7)));
  auto inline_sample = q.get();
  ASSERT_TRUE(inline_sample);
  auto with_room = q.loan(8, hakobu::MessageKind::Bytes, 2);
  ASSERT_TRUE(with_room);
  EXPECT_EQ(with_room->attach(*inline_sample).error().code, hakobu::AttachError::NotShared);
  EXPECT_EQ(inline_sample->attachment_count(), 0U);
  EXPECT_FALSE(inline_sample->attachment(0));
}

TEST(Queue, ThreadsAsProducersAndConsumers) {
  constexpr int kProducers = 3;
  constexpr int kConsumers = 3;
  constexpr int kPerProducer = 3000;
  auto q = make_queue(16);
  Unlinker cleanup{q};
  std::vector<std::vector<int>> seen(kConsumers);
  std::vector<std::thread> threads;
  for (int p = 0; p < kProducers; ++p) {
    threads.emplace_back([&, p] {
      auto h = Queue::attach(q.name());
      for (int i = 0; i < kPerProducer; ++i) {
        const int value = p * kPerProducer + i;
        if (i % 10 == 0) {
          std::vector<int> big(1000, value);  // every tenth message takes a block
          ASSERT_TRUE(h->put(std::as_bytes(std::span(big))));
        } else {
          ASSERT_TRUE(h->put(bytes_of(value)));
        }
      }
    });
  }
  for (int c = 0; c < kConsumers; ++c) {
    threads.emplace_back([&, c] {
      auto h = Queue::attach(q.name());
      h->set_spin(0ns);
      for (;;) {
        auto s = h->get(5s);
        if (!s) return;
        int value = 0;
        std::memcpy(&value, s->bytes().data(), sizeof value);
        if (value < 0) return;
        seen[static_cast<std::size_t>(c)].push_back(value);
      }
    });
  }
  for (int p = 0; p < kProducers; ++p) threads[static_cast<std::size_t>(p)].join();
  for (int c = 0; c < kConsumers; ++c) ASSERT_TRUE(q.put(bytes_of(-1)));
  for (int c = 0; c < kConsumers; ++c) threads[static_cast<std::size_t>(kProducers + c)].join();
  std::vector<int> all;
  for (auto& v : seen) {
    // Each producer's messages arrive in order at every consumer.
    std::vector<int> last(kProducers, -1);
    for (int value : v) {
      EXPECT_GT(value, last[static_cast<std::size_t>(value / kPerProducer)]);
      last[static_cast<std::size_t>(value / kPerProducer)] = value;
    }
    all.insert(all.end(), v.begin(), v.end());
  }
  std::sort(all.begin(), all.end());
  ASSERT_EQ(all.size(), static_cast<std::size_t>(kProducers * kPerProducer)) << "nothing lost, nothing doubled";
  for (std::size_t i = 0; i < all.size(); ++i) ASSERT_EQ(all[i], static_cast<int>(i));
  EXPECT_EQ(q.domain().stats().live_blocks, 0U);
}

}  // namespace
