// Unit tests: the core's promises under hostile bytes in shared memory, absurd
// sizes and two threads of one process. Each test reproduces a defect found by
// a review (forged headers, wrapping sizes, doubled reclaims) and checks that
// it is now an error for that message, never a crash or a double free.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "channel/ring.hpp"
#include "domain/domain_state.hpp"
#include "hakobu/domain.hpp"
#include "hakobu/queue.hpp"
#include "memory/heap.hpp"
#include "test_support.hpp"

namespace {

using hakobu::detail::BlockHeader;
using hakobu::detail::class_bytes;
using hakobu::detail::class_for;
using hakobu::detail::DomainState;
using hakobu::detail::kBlockHeaderBytes;

std::shared_ptr<DomainState> attach(const std::string& suffix = {}) {
  hakobu::DomainOptions options;
  if (!suffix.empty()) options.name = hakobu::test::domain() + "-" + suffix;
  auto state = DomainState::attach(options);
  EXPECT_TRUE(state) << state.error().message;
  return state ? *state : nullptr;
}

// A header claiming a class far larger than the heap file: every table it
// describes must be bounded by what is carved and backed, not by the claim.
void forge_huge_class(BlockHeader* h) {
  h->size_class.store(static_cast<std::uint16_t>(class_for(std::uint64_t{384} << 30)));
  h->backed_bytes.store(std::uint64_t{384} << 30);
}

TEST(Hostile, AForgedAttachmentTableBeyondTheFileIsRejected) {
  auto domain = attach();
  auto& heap = domain->heap();
  auto loan = domain->make_loan(1000, hakobu::MessageKind::Bytes, 1);
  ASSERT_TRUE(loan) << loan.error().message;
  auto target = domain->make_loan(100, hakobu::MessageKind::Bytes);
  ASSERT_TRUE(target);
  ASSERT_TRUE(loan->attach(*target));
  const auto block = static_cast<std::uint64_t>(loan->bytes().data() - heap.payload(0));
  BlockHeader* h = heap.header(block);
  const std::uint16_t saved_class = h->size_class.load();
  const auto saved_backed = h->backed_bytes.load();
  const auto saved_table = h->attachment_table;
  forge_huge_class(h);
  h->attachment_table = std::uint64_t{128} << 30;  // inside the claimed class, far beyond the file
  EXPECT_TRUE(heap.attachments(block).empty()) << "a table beyond the file is no table";
  EXPECT_EQ(loan->attachment_count(), 1U);
  // Restored, the loan releases normally and its attachment with it.
  h->size_class.store(saved_class);
  h->backed_bytes.store(saved_backed);
  h->attachment_table = saved_table;
  EXPECT_EQ(heap.attachments(block).size(), 1U);
}

TEST(Hostile, ReleasingASampleWithAForgedHeaderDoesNotCrash) {
  auto domain = attach();
  auto queue = hakobu::Queue::open(hakobu::test::unique_name("forged"));
  ASSERT_TRUE(queue);
  auto loan = queue->loan(4096, hakobu::MessageKind::Bytes, 2);
  ASSERT_TRUE(loan);
  ASSERT_TRUE(queue->put(*loan));
  auto sample = queue->get(std::chrono::seconds(5));
  ASSERT_TRUE(sample) << sample.error().message;
  auto& heap = domain->heap();
  BlockHeader* h = heap.header(sample->block_offset());
  forge_huge_class(h);
  h->attachment_count = 1;
  h->attachment_table = std::uint64_t{128} << 30;
  EXPECT_FALSE(sample->attachment(0));
  sample->reset();  // frees the block: must not walk the forged table
  (void)queue->unlink();
}

TEST(Hostile, ADeadProcessesHoldingsCountIsBoundedByItsTable) {
  auto domain = attach("holdings");
  auto& heap = domain->heap();
  auto table = heap.allocate(256 * 8);
  ASSERT_TRUE(table);
  std::memset(heap.payload(*table), 0, 256 * 8);
  // A slot that looks like a dead process: active, its lock free.
  auto& slot = domain->registry()->processes[hakobu::detail::kMaxProcesses - 1];
  slot.holdings.store(*table);
  slot.holdings_capacity.store(std::uint64_t{1} << 40);
  slot.holdings_used.store(std::uint64_t{1} << 40);
  forge_huge_class(heap.header(*table));
  slot.state.store(hakobu::detail::kSlotActive);
  (void)domain->stats();  // counts held blocks: must stay inside the table
  EXPECT_EQ(domain->collect_garbage(), 1U);
  EXPECT_EQ(slot.state.load(), hakobu::detail::kSlotFree);
}

TEST(Hostile, AbsurdSizesAreErrorsNotWrappedAllocations) {
  auto domain = attach();
  for (const std::uint64_t size : {~std::uint64_t{0}, ~std::uint64_t{0} - 71, std::uint64_t{1} << 63}) {
    for (const std::size_t attachments : {std::size_t{0}, std::size_t{9}}) {
      auto loan = domain->make_loan(size, hakobu::MessageKind::Bytes, attachments);
      ASSERT_FALSE(loan) << size;
      EXPECT_EQ(loan.error().code, hakobu::LoanError::TooLarge) << loan.error().message;
    }
  }
  auto queue = hakobu::Queue::open(hakobu::test::unique_name("absurd"));
  ASSERT_TRUE(queue);
  auto loan = queue->loan(~std::size_t{0});
  ASSERT_FALSE(loan);
  EXPECT_EQ(loan.error().code, hakobu::LoanError::TooLarge);
  auto too_many = queue->loan(8, hakobu::MessageKind::Bytes, std::size_t{1} << 20);
  ASSERT_FALSE(too_many);
  EXPECT_EQ(too_many.error().code, hakobu::LoanError::InvalidArgument);
  const std::int64_t shape[] = {std::int64_t{1} << 62, 4};
  auto array = queue->loan_array(hakobu::DType::of<std::int64_t>(), shape);
  ASSERT_FALSE(array);
  (void)queue->unlink();
}

TEST(Hostile, AFreeBlockCannotBeReferencedAgain) {
  auto domain = attach();
  auto& heap = domain->heap();
  auto block = heap.allocate(1000);
  ASSERT_TRUE(block);
  ASSERT_TRUE(heap.drop_ref(*block));
  EXPECT_FALSE(heap.add_ref(*block)) << "a free block stays free";
  EXPECT_EQ(heap.header(*block)->refs.load(), 0U);
  auto again = heap.allocate(1000);  // the free list is intact: the same block comes back once
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, *block);
  auto other = heap.allocate(1000);
  ASSERT_TRUE(other);
  EXPECT_NE(*other, *again);
  heap.drop_ref(*other);
  heap.drop_ref(*again);
}

TEST(Hostile, ACorruptAttachmentIndexCannotFreeABlockTwice) {
  auto domain = attach();
  auto queue = hakobu::Queue::open(hakobu::test::unique_name("attach-index"));
  ASSERT_TRUE(queue);
  auto& heap = domain->heap();
  auto freed = heap.allocate(70000);  // a trimmable class
  ASSERT_TRUE(freed);
  ASSERT_TRUE(heap.drop_ref(*freed));
  auto loan = queue->loan(64, hakobu::MessageKind::Bytes, 1);
  ASSERT_TRUE(loan);
  auto data = queue->loan(100);
  ASSERT_TRUE(data);
  ASSERT_TRUE(loan->attach(*data));
  ASSERT_TRUE(queue->put(*loan));
  auto sample = queue->get(std::chrono::seconds(5));
  ASSERT_TRUE(sample);
  // The attachment now names a free block.
  heap.attachments(sample->block_offset())[0].store(*freed);
  auto forward = queue->loan(64, hakobu::MessageKind::Bytes, 1);
  ASSERT_TRUE(forward);
  auto attached = forward->attach(*sample, 0);
  ASSERT_FALSE(attached);
  EXPECT_EQ(attached.error().code, hakobu::AttachError::Invalid);
  sample->reset();  // drops the free block's "reference": ignored, refs stay 0
  EXPECT_EQ(heap.header(*freed)->refs.load(), 0U);
  heap.trim_cache();  // walks the free lists: must end
  auto a = heap.allocate(70000);
  auto b = heap.allocate(70000);
  ASSERT_TRUE(a && b);
  EXPECT_NE(*a, *b) << "the freed block is on its list once";
  heap.drop_ref(*a);
  heap.drop_ref(*b);
  (void)queue->unlink();
}

TEST(Hostile, ACyclicFreeListEndsTheCacheTrim) {
  auto domain = attach("cycle");
  auto& heap = domain->heap();
  auto a = heap.allocate(70000);
  auto b = heap.allocate(70000);
  ASSERT_TRUE(a && b);
  heap.drop_ref(*a);
  heap.drop_ref(*b);  // list: b -> a
  // a -> b: a cycle.
  heap.header(*a)->next_free.store(hakobu::detail::pack_free(*b, 0));
  heap.trim_cache();  // must return
  SUCCEED();
}

// Two threads of one process share the registry's open file and so its slot
// locks: both could reclaim the same dead process.
TEST(Hostile, TwoThreadsNeverReclaimTheSameDeadProcessTwice) {
  const std::string name = hakobu::test::domain() + "-reclaim";
  hakobu::DomainOptions options;
  options.name = name;
  auto domain = hakobu::Domain::open(options);
  ASSERT_TRUE(domain) << domain.error().message;
  constexpr int kRounds = 20;
  constexpr int kChildren = 6;
  std::size_t reclaimed_total = 0;
  for (int round = 0; round < kRounds; ++round) {
    std::vector<pid_t> children;
    for (int i = 0; i < kChildren; ++i) {
      const pid_t child = ::fork();
      if (child == 0) {
        // A separate process that attaches, takes a loan and dies without letting go.
        hakobu::DomainOptions quiet = options;
        quiet.collect_on_attach = false;  // the dead are the threads' to reclaim
        auto mine = hakobu::Domain::open(quiet);
        if (!mine) ::_exit(2);
        auto loan = mine->loan(5000);
        ::_exit(loan ? 0 : 3);
      }
      ASSERT_GT(child, 0);
      children.push_back(child);
    }
    for (const pid_t child : children) {
      int status = 0;
      ASSERT_EQ(::waitpid(child, &status, 0), child);
      ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    std::atomic<std::size_t> reclaimed{0};
    std::thread first([&] { reclaimed += domain->collect_garbage(); });
    std::thread second([&] { reclaimed += domain->collect_garbage(); });
    first.join();
    second.join();
    EXPECT_EQ(reclaimed.load(), std::size_t{kChildren}) << "round " << round;
    reclaimed_total += reclaimed.load();
    EXPECT_EQ(domain->stats().live_blocks, 0U) << "round " << round;
  }
  EXPECT_EQ(reclaimed_total, std::size_t{kRounds * kChildren});
}

// An offset into memory whose pages were returned (a hole of /dev/shm) is
// refused before anything there is read: reading a hole allocates a page,
// which is a SIGBUS when /dev/shm is full. The file's allocation shows it.
TEST(Hostile, OffsetsIntoReturnedPagesAreRefusedWithoutReadingThem) {
  hakobu::DomainOptions options;
  options.name = hakobu::test::domain() + "-holes";
  options.cache_limit = 1 << 20;
  options.huge_pages = hakobu::HugePages::Never;
  auto domain = DomainState::attach(options);
  ASSERT_TRUE(domain);
  auto& heap = (*domain)->heap();
  auto block = heap.allocate(16 << 20);
  ASSERT_TRUE(block);
  std::memset(heap.payload(*block), 1, 16 << 20);
  heap.drop_ref(*block);  // over the cache limit: its pages go back, the header page stays
  const std::string file = "/dev/shm/hakobu:" + options.name + ":heap";
  const auto before = hakobu::platform::path_info(file);
  ASSERT_TRUE(before);
  for (std::uint64_t offset = 4096; offset < (std::uint64_t{16} << 20); offset += std::uint64_t{1} << 20) {
    EXPECT_FALSE(heap.check_block(*block + offset, 0));
    EXPECT_TRUE(heap.attachments(*block + offset).empty());
  }
  EXPECT_TRUE(heap.check_block(*block, 0)) << "the header page of a free block stays readable";
  EXPECT_FALSE(heap.check_block(*block, 8 << 20)) << "its returned payload does not";
  const auto after = hakobu::platform::path_info(file);
  ASSERT_TRUE(after);
  EXPECT_EQ(after->allocated, before->allocated) << "no page of a hole was touched";
}

// A damaged queue header (positions far from the slots' own) must not keep a
// timed get or put in the queue's loops past its deadline.
TEST(Hostile, ADamagedRingNeverHoldsACallerPastItsDeadline) {
  auto domain = attach();
  hakobu::QueueOptions options;
  options.capacity = 4;
  auto queue = hakobu::Queue::create(hakobu::test::unique_name("damaged"), options);
  ASSERT_TRUE(queue);
  const std::string path = "/dev/shm/hakobu:" + domain->name() + ":q:" + queue->name();
  auto file = hakobu::platform::open_path(path, O_RDWR, 0600);
  ASSERT_TRUE(file);
  auto mapped = hakobu::platform::map_shared(*file, sizeof(hakobu::detail::QueueHeader) + 4 * 256);
  ASSERT_TRUE(mapped);
  auto* header = static_cast<hakobu::detail::QueueHeader*>(*mapped);
  auto* slots = reinterpret_cast<hakobu::detail::SlotHeader*>(header + 1);
  for (std::uint64_t seed = 1; seed < 64; ++seed) {
    // Every slot as far ahead of the positions as positions go: each try
    // "helps" the position along, one step at a time, half the position space.
    header->dequeue_pos.store(seed * 977);
    header->enqueue_pos.store(seed * 977 + 2);
    const auto state = seed % 2 == 0 ? hakobu::detail::SlotState::Reading : hakobu::detail::SlotState::Full;
    for (std::uint64_t i = 0; i < 4; ++i) {
      auto* slot = reinterpret_cast<hakobu::detail::SlotHeader*>(reinterpret_cast<std::byte*>(slots) + i * 256);
      slot->control.store(hakobu::detail::make_control(seed * 977 + hakobu::detail::kPositionMask / 2 - i, state, 0));
    }
    // Whatever the garbage yields, each call returns: a watchdog thread fails
    // the test if one is still inside the queue after a generous minute.
    std::atomic<bool> returned{false};
    std::thread caller([&] {
      (void)queue->get(std::chrono::milliseconds(2));
      (void)queue->put(std::as_bytes(std::span("x", 1)), std::chrono::milliseconds(2));
      (void)queue->try_get();
      (void)queue->try_put(std::as_bytes(std::span("y", 1)));
      returned = true;
    });
    for (int waited = 0; waited < 600 && !returned; ++waited)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ASSERT_TRUE(returned) << "a call on a damaged ring did not return (seed " << seed << ")";
    caller.join();
  }
  hakobu::platform::unmap(*mapped, sizeof(hakobu::detail::QueueHeader) + 4 * 256);
  hakobu::platform::close_fd(*file);
  (void)queue->unlink();
}

// Unlinking removes the queue's own file, never a newer queue that took its name.
TEST(Hostile, UnlinkNeverRemovesANewerQueueOfTheSameName) {
  auto domain = attach();
  const std::string name = hakobu::test::unique_name("renamed");
  auto old_queue = hakobu::Queue::create(name);
  ASSERT_TRUE(old_queue);
  // Its file goes (an administrator's rm of what looked damaged), a new queue takes the name.
  ASSERT_TRUE(hakobu::platform::shm_remove("hakobu:" + domain->name() + ":q:" + name));
  auto new_queue = hakobu::Queue::create(name);
  ASSERT_TRUE(new_queue) << new_queue.error().message;
  ASSERT_TRUE(new_queue->put(std::as_bytes(std::span("new", 3))));
  (void)old_queue->unlink();
  auto again = hakobu::Queue::attach(name);
  ASSERT_TRUE(again) << "the newer queue is still there: " << again.error().message;
  auto message = again->try_get();
  ASSERT_TRUE(message);
  EXPECT_EQ(message->size(), 3U);
  EXPECT_TRUE(new_queue->unlink());
}

// Files are the user's alone whatever the umask: under 0277 they would be
// read-only and the user's other processes could not attach.
TEST(Hostile, FilesAreCreatedReadWriteForTheUserWhateverTheUmask) {
  const mode_t old = ::umask(0277);
  const std::string name = hakobu::test::unique_name("umask");
  hakobu::DomainOptions options;
  options.name = hakobu::test::domain() + "-umask";
  hakobu::QueueOptions queue_options;
  queue_options.domain = options;
  auto queue = hakobu::Queue::create(name, queue_options);
  ::umask(old);
  ASSERT_TRUE(queue) << queue.error().message;
  for (const auto& file : hakobu::test::files_of_domain(options.name)) {
    auto info = hakobu::platform::path_info(file);
    ASSERT_TRUE(info);
    EXPECT_EQ(info->mode & 0777, 0600U) << file;
  }
  (void)queue->unlink();
}

}  // namespace
