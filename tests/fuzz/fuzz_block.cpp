// fuzz_block — heap blocks and queue slot descriptors damaged by another
// process, and every reader of them: Heap::check_block, Heap::attachments,
// Loan::array, Queue::try_put/try_get, Sample::attachment, Sample::array,
// Loan::attach(sample[, index]), releasing samples and loans (freeing blocks
// walks their attachments), allocation from the free lists, Heap::trim_cache.
//
// Each iteration builds a fresh domain fz<pid>b (16 MiB heap, no huge pages)
// with a queue "b" of 4 slots and these blocks:
//   0 arr    an array message by reference (float32[250]), attachment 0 = data0
//   1 msg    a 300-byte message with room for 3 attachments: data0, data1
//   2 data0  1000 bytes
//   3 data1  70000 bytes (a page-aligned class, trimmed past the cache limit)
//   4 the holdings table of this process
//   5 spare  a 100-byte loan with room for 2 attachments, never sent
//
// Input: a flags byte, then records (fuzz_support.hpp):
//   flags bit 0: damage the blocks after the puts (else before)
//         bit 1: put arr   bit 2: put msg   bit 3: put data1   bit 4: put 8 inline bytes
//         bit 5: Heap::trim_cache at the end
//   op 0x00-0x5F: block (op >> 4) field (op & 15) = value (BlockField; PayloadWord
//                 reads a u16 index first, AttachmentEntry a u8 index)
//   op 0x60-0x6F: slot ((op >> 2) & 3) of the ring, descriptor field (op & 3):
//                 0 control, 1 kind, 2 length, 3 block = value (written after the puts)
//   other ops:    ignored
// Mask names (HAKOBU_FUZZ_MASK, exploration only): spare-attach (no Loan::attach
// on the damaged spare loan).
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "channel/ring.hpp"
#include "domain/domain_state.hpp"
#include "fuzz_support.hpp"
#include "hakobu/hakobu.hpp"
#include "memory/heap.hpp"

namespace {

using namespace std::chrono_literals;
using hakobu::fuzz::BlockField;

std::string g_domain;  // NOLINT(cppcoreguidelines-avoid-non-const-global-variables)

[[noreturn]] void harness_broken(const std::string& what) {
  hakobu::fuzz::harness_broken("fuzz_block", what);
}

hakobu::QueueOptions queue_options() {
  return hakobu::fuzz::small_queue_options(g_domain, 4);
}

struct Record {
  bool slot = false;
  unsigned target = 0;  // block or slot index
  unsigned field = 0;
  std::uint16_t index = 0;
  std::uint64_t value = 0;
};

std::vector<Record> parse_records(hakobu::fuzz::Input& in) {
  std::vector<Record> out;
  while (!in.empty()) {
    const std::uint8_t op = in.u8();
    Record r;
    if (op < 0x60) {
      r.target = op >> 4U;
      r.field = op & 15U;
      if (r.field >= static_cast<unsigned>(BlockField::Count)) continue;
      if (r.field == static_cast<unsigned>(BlockField::PayloadWord)) r.index = in.u16();
      if (r.field == static_cast<unsigned>(BlockField::AttachmentEntry)) r.index = in.u8();
    } else if (op < 0x70) {
      r.slot = true;
      r.target = (op >> 2U) & 3U;
      r.field = op & 3U;
    } else {
      continue;
    }
    r.value = in.u64();
    out.push_back(r);
  }
  return out;
}

struct Known {
  std::vector<std::uint64_t> offsets;
  std::vector<std::uint64_t> limits;  // bytes from the block start the harness may write
  std::vector<std::uint64_t> tables;  // attachment table (payload offset) before any damage
};

void damage_blocks(const std::vector<Record>& records, const Known& known, hakobu::detail::Heap& heap,
                   std::uint64_t heap_bytes) {
  std::byte* base = heap.base();
  for (const auto& r : records) {
    if (r.slot) continue;
    hakobu::fuzz::patch_block(base, heap_bytes, known.offsets[r.target], known.limits[r.target], known.tables[r.target],
                              static_cast<BlockField>(r.field), hakobu::fuzz::resolve(r.value, known.offsets), r.index);
  }
}

void damage_slots(const std::vector<Record>& records, const Known& known) {
  bool any = false;
  for (const auto& r : records) any = any || r.slot;
  if (!any) return;
  hakobu::fuzz::MappedFile file("hakobu:" + g_domain + ":q:b");
  if (file.size() < sizeof(hakobu::detail::QueueHeader)) harness_broken("cannot map the queue file");
  const auto* header = reinterpret_cast<const hakobu::detail::QueueHeader*>(file.data());  // NOLINT
  for (const auto& r : records) {
    if (!r.slot) continue;
    const std::uint64_t at = sizeof(hakobu::detail::QueueHeader) + std::uint64_t{r.target} * header->slot_bytes;
    if (at + hakobu::detail::kSlotHeaderBytes > file.size()) continue;
    auto* s = reinterpret_cast<hakobu::detail::SlotHeader*>(file.data() + at);  // NOLINT
    const std::uint64_t value = hakobu::fuzz::resolve(r.value, known.offsets);
    switch (r.field) {
      case 0: s->control.store(value); break;
      case 1: s->kind = static_cast<std::uint8_t>(value); break;
      case 2: s->length = value; break;
      default: s->block = value; break;
    }
  }
}

void inspect_view(const hakobu::ArrayView& view) {
  std::int64_t low = 0;
  std::int64_t high = 0;
  for (std::size_t k = 0; k < view.ndim(); ++k) {
    if (view.shape[k] == 0) return;
    const std::int64_t span = (view.shape[k] - 1) * view.strides[k];
    (span < 0 ? low : high) += span;
  }
  hakobu::fuzz::touch(view.data + low);
  hakobu::fuzz::touch(view.data + high + static_cast<std::int64_t>(view.dtype.itemsize()) - 1);
}

void inspect_sample(hakobu::Queue& queue, hakobu::Sample& sample, hakobu::Loan& spare) {
  hakobu::fuzz::touch(sample.bytes());
  const std::size_t count = sample.attachment_count();
  for (std::size_t i = 0; i <= std::min<std::size_t>(count, 8); ++i) {
    if (auto a = sample.attachment(i)) hakobu::fuzz::touch(*a);
  }
  if (sample.kind() == hakobu::MessageKind::Array) {
    if (auto view = sample.array()) inspect_view(*view);
  }
  // Forwarding: attach the message and its attachments to new messages.
  if (auto forward = queue.loan(16, hakobu::MessageKind::Bytes, 3)) {
    (void)forward->attach(sample);
    (void)forward->attach(sample, 0);
    (void)forward->attach(sample, 1);
    (void)forward->attachment_count();
  }
  if (spare && !hakobu::fuzz::masked("spare-attach")) {
    (void)spare.attach(sample, 0);
    (void)spare.attach(sample);
  }
}

std::uint64_t offset_of(const hakobu::Loan& loan, hakobu::detail::Heap& heap) {
  return static_cast<std::uint64_t>(loan.bytes().data() - heap.payload(0));
}

void run(const std::uint8_t* data, std::size_t size) {
  hakobu::fuzz::Input in(data, size);
  const std::uint8_t flags = in.u8();
  const std::vector<Record> records = parse_records(in);

  const auto options = queue_options();
  auto queue = hakobu::Queue::create("b", options);
  if (!queue) harness_broken(queue.error().message);
  auto state_or = hakobu::detail::DomainState::attach(options.domain);
  if (!state_or) harness_broken(state_or.error().message);
  std::shared_ptr<hakobu::detail::DomainState> state = *state_or;
  auto& heap = state->heap();

  auto data0 = queue->loan(1000);
  auto data1 = queue->loan(70000);
  const std::int64_t shape[] = {250};
  const std::int64_t strides[] = {4};
  auto arr = queue->loan_array_ref(hakobu::DType::of<float>(), shape, strides, 0);
  auto msg = queue->loan(300, hakobu::MessageKind::Bytes, 3);
  auto spare = queue->loan(100, hakobu::MessageKind::Bytes, 2);
  if (!data0 || !data1 || !arr || !msg || !spare) harness_broken("loans");
  std::memset(data0->bytes().data(), 0x3F, data0->bytes().size());
  std::memset(data1->bytes().data(), 0x11, 4096);
  std::memset(msg->bytes().data(), 0x22, msg->bytes().size());
  if (!arr->attach(*data0) || !msg->attach(*data0) || !msg->attach(*data1)) harness_broken("attach");

  Known known;
  known.offsets = {offset_of(*arr, heap),
                   offset_of(*msg, heap),
                   offset_of(*data0, heap),
                   offset_of(*data1, heap),
                   state->registry()->processes[state->slot()].holdings.load(),
                   offset_of(*spare, heap)};
  for (const auto b : known.offsets) {
    const auto* h = heap.header(b);
    known.limits.push_back(std::min(hakobu::detail::class_bytes(h->size_class), h->backed_bytes.load()));
    known.tables.push_back(h->attachment_table);
  }
  const std::uint64_t heap_bytes = state->registry()->heap_top.load();

  const bool late = (flags & 1U) != 0;
  if (!late) damage_blocks(records, known, heap, heap_bytes);
  if ((flags & 2U) != 0) (void)queue->try_put(*arr);
  if ((flags & 4U) != 0) (void)queue->try_put(*msg);
  if ((flags & 8U) != 0) (void)queue->try_put(*data1);
  if ((flags & 16U) != 0) {
    const std::byte small[8] = {};
    (void)queue->try_put(small);
  }
  if (late) damage_blocks(records, known, heap, heap_bytes);
  damage_slots(records, known);

  // Readers of the damaged blocks.
  for (const auto b : known.offsets) {
    (void)heap.check_block(b, 0);
    (void)heap.check_block(b, heap.header(b)->payload_bytes.load());
    for (auto& entry : heap.attachments(b)) (void)heap.check_block(entry.load(), 0);
  }
  if (*arr) {
    if (auto view = arr->array()) inspect_view(*view);
    (void)arr->attachment_count();
  }
  (void)msg->attachment_count();

  std::vector<hakobu::Sample> samples;
  for (int i = 0; i < 6; ++i) {
    auto sample = queue->try_get();
    if (!sample) {
      if (sample.error().code == hakobu::GetError::Empty) break;
      continue;
    }
    inspect_sample(*queue, *sample, *spare);
    samples.push_back(std::move(*sample));
  }
  samples.clear();  // frees the blocks, walking their attachments
  *spare = hakobu::Loan();
  *arr = hakobu::Loan();
  *msg = hakobu::Loan();
  *data0 = hakobu::Loan();
  *data1 = hakobu::Loan();

  // Allocation from the (maybe damaged) free lists.
  for (const std::size_t bytes : {std::size_t{100}, std::size_t{1000}, std::size_t{70000}, std::size_t{300}}) {
    auto again = queue->loan(bytes, hakobu::MessageKind::Bytes, 1);
    if (again) std::memset(again->bytes().data(), 0x44, std::min<std::size_t>(bytes, 256));
  }
  if ((flags & 32U) != 0) heap.trim_cache();
  (void)state->stats();

  (void)queue->unlink();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  g_domain = hakobu::fuzz::domain_name("b");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const hakobu::fuzz::LeakCheck leaks(g_domain);
  run(data, size);
  return 0;
}
