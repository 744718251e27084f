// fuzz_registry_attach — a domain registry (RegistryHeader: header fields,
// free-list heads, process slots and their holdings tables) damaged by a buggy
// or hostile process, met by a process that attaches: Domain::open validates
// the header, takes a slot and collects garbage (reclaims what dead processes
// held, walking their holdings tables); then collect_garbage(), stats(), loans
// (popping the free lists) and the queue "keep" of the domain (try_get).
//
// Once, in LLVMFuzzerInitialize, a forked child builds domain fz<pid>r: a
// queue "keep" (8 slots) holding messages (1000 bytes with no attachment,
// 70000 bytes, 8 inline bytes), and it dies holding a 4096-byte loan, a
// 300-byte loan attached to the first message's block, and a received sample.
// The three files are kept in memory as a template. Each iteration writes the
// template back to /dev/shm, damaged by the input, then attaches.
//
// Input: records (fuzz_support.hpp: op byte, [index], u64 value; block
// references resolve against the known blocks: the dead process's holdings
// table, then the blocks it lists, then the blocks in the ring).
//   op 0x00-0x17: header field (0 magic, 1 layout_version, 2 max_processes,
//                 3 file_bytes, 4 heap_capacity, 5 cache_limit, 6 named_objects,
//                 7 next_slot, 8 heap_top, 9 live_bytes, 10 live_blocks,
//                 11 cached_bytes, 12 page_map_offset, 13-14 page_map_words[0-1],
//                 15-16 page_map_backed[0-1], 17 huge_top, 18 huge_capacity,
//                 19 huge_page_size, 20-21 huge_directory bytes 0-7 and 8-15,
//                 22-23 reserved1[0-1])
//   op 0x18-0x47: process slot (op - 0x18) / 8 (0 is the dead child's), field
//                 (op - 0x18) % 8: 0 state, 1 generation, 2 pid, 3 reserved0,
//                 4 holdings, 5 holdings_capacity, 6 holdings_used, 7 reserved1[0]
//   op 0x48-0xE7: free_lists[op - 0x48].head
//   op 0xE8-0xEF: a u16 index, then page-map word [index] of the heap (raw value)
//   op 0xF0-0xFF: a u8 index picks a known block; field op - 0xF0 of it
//                 (BlockField; PayloadWord reads a u16 index, AttachmentEntry a u8)
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <span>
#include <string>
#include <vector>

#include "channel/ring.hpp"
#include "fuzz_support.hpp"
#include "hakobu/hakobu.hpp"
#include "memory/layout.hpp"

namespace {

using namespace std::chrono_literals;
using hakobu::detail::ProcessSlot;
using hakobu::detail::RegistryHeader;
using hakobu::fuzz::BlockField;

// NOLINTBEGIN(cppcoreguidelines-avoid-non-const-global-variables): the template, built once
std::string g_domain;
std::vector<std::byte> g_registry;
std::vector<std::byte> g_heap;
std::vector<std::byte> g_queue;
std::vector<std::uint64_t> g_blocks;
// NOLINTEND(cppcoreguidelines-avoid-non-const-global-variables)

[[noreturn]] void harness_broken(const std::string& what) {
  hakobu::fuzz::harness_broken("fuzz_registry_attach", what);
}

hakobu::QueueOptions queue_options() {
  return hakobu::fuzz::small_queue_options(g_domain, 8);
}

std::string file(const char* suffix) {
  return "hakobu:" + g_domain + ":" + suffix;
}

// The child: builds the domain and dies holding loans and a sample.
[[noreturn]] void die_holding_things() {
  auto queue = hakobu::Queue::create("keep", queue_options());
  if (!queue) _exit(10);
  auto first = queue->loan(1000);
  auto held = queue->loan(300, hakobu::MessageKind::Bytes, 2);
  auto scratch = queue->loan(4096);
  if (!first || !held || !scratch) _exit(11);
  std::memset(first->bytes().data(), 0x31, 1000);
  std::memset(scratch->bytes().data(), 0, 4096);
  if (!held->attach(*first)) _exit(12);
  if (!queue->try_put(*first)) _exit(13);
  auto second = queue->loan(70000);
  if (!second || !queue->try_put(*second)) _exit(14);
  const std::byte small[8] = {};
  if (!queue->try_put(small)) _exit(15);
  auto sample = queue->try_get();  // the first message: now held by this process too
  if (!sample) _exit(16);
  _exit(0);  // no destructors: the slot stays ACTIVE with its holdings listed
}

void build_template() {
  hakobu::fuzz::remove_domain_files(g_domain);
  const pid_t child = ::fork();
  if (child < 0) harness_broken("fork");
  if (child == 0) die_holding_things();
  int status = 0;
  if (::waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    harness_broken("the child that builds the domain failed (status " + std::to_string(status) + ")");
  }
  g_registry = hakobu::fuzz::read_file(file("registry"));
  g_heap = hakobu::fuzz::read_file(file("heap"));
  g_queue = hakobu::fuzz::read_file(file("q:keep"));
  hakobu::fuzz::remove_domain_files(g_domain);
  if (g_registry.size() < sizeof(RegistryHeader) || g_queue.size() < sizeof(hakobu::detail::QueueHeader)) {
    harness_broken("the template files are too short");
  }

  // Known blocks: the dead process's holdings table and what it lists, then the ring's blocks.
  const auto* registry = reinterpret_cast<const RegistryHeader*>(g_registry.data());  // NOLINT
  for (const ProcessSlot& slot : registry->processes) {
    if (slot.state.load() != hakobu::detail::kSlotActive) continue;
    const std::uint64_t table = slot.holdings.load();
    g_blocks.push_back(table);
    for (std::uint64_t i = 0; i < slot.holdings_used.load(); ++i) {
      std::uint64_t entry = 0;
      std::memcpy(&entry, g_heap.data() + table + hakobu::detail::kBlockHeaderBytes + 8 * i, 8);
      if (entry != 0) g_blocks.push_back(entry);
    }
  }
  const auto* queue = reinterpret_cast<const hakobu::detail::QueueHeader*>(g_queue.data());  // NOLINT
  for (std::uint64_t i = 0; i < queue->capacity; ++i) {
    const auto* s = reinterpret_cast<const hakobu::detail::SlotHeader*>(  // NOLINT
        g_queue.data() + sizeof(hakobu::detail::QueueHeader) + i * queue->slot_bytes);
    if (s->block != 0) g_blocks.push_back(s->block);
  }
  if (g_blocks.size() < 4) harness_broken("the template has too few blocks");
}

struct Field {
  std::size_t offset;
  std::size_t width;
};

// Header fields, by record opcode.
constexpr Field kHeaderFields[] = {
    {offsetof(RegistryHeader, magic), 8},
    {offsetof(RegistryHeader, layout_version), 4},
    {offsetof(RegistryHeader, max_processes), 4},
    {offsetof(RegistryHeader, file_bytes), 8},
    {offsetof(RegistryHeader, heap_capacity), 8},
    {offsetof(RegistryHeader, cache_limit), 8},
    {offsetof(RegistryHeader, named_objects), 4},
    {offsetof(RegistryHeader, next_slot), 4},
    {offsetof(RegistryHeader, heap_top), 8},
    {offsetof(RegistryHeader, live_bytes), 8},
    {offsetof(RegistryHeader, live_blocks), 8},
    {offsetof(RegistryHeader, cached_bytes), 8},
    {offsetof(RegistryHeader, page_map_offset), 8},
    {offsetof(RegistryHeader, page_map_words), 8},
    {offsetof(RegistryHeader, page_map_words) + 8, 8},
    {offsetof(RegistryHeader, page_map_backed), 8},
    {offsetof(RegistryHeader, page_map_backed) + 8, 8},
    {offsetof(RegistryHeader, huge_top), 8},
    {offsetof(RegistryHeader, huge_capacity), 8},
    {offsetof(RegistryHeader, huge_page_size), 8},
    {offsetof(RegistryHeader, huge_directory), 8},
    {offsetof(RegistryHeader, huge_directory) + 8, 8},
    {offsetof(RegistryHeader, reserved1), 8},
    {offsetof(RegistryHeader, reserved1) + 8, 8},
};
constexpr unsigned kHeaderOps = std::size(kHeaderFields);  // 0x00-0x17

// Process slot fields.
constexpr Field kSlotFields[] = {
    {offsetof(ProcessSlot, state), 4},         {offsetof(ProcessSlot, generation), 4},
    {offsetof(ProcessSlot, pid), 4},           {offsetof(ProcessSlot, reserved0), 4},
    {offsetof(ProcessSlot, holdings), 8},      {offsetof(ProcessSlot, holdings_capacity), 8},
    {offsetof(ProcessSlot, holdings_used), 8}, {offsetof(ProcessSlot, reserved1), 8},
};
constexpr unsigned kSlotOps = 0x18;      // 0x18-0x47: 6 slots x 8 fields
constexpr unsigned kFreeListOps = 0x48;  // 0x48-0xE7: 160 free-list heads
constexpr unsigned kPageMapOps = 0xE8;   // 0xE8-0xEF: a page-map word of segment 0
constexpr unsigned kBlockOps = 0xF0;     // 0xF0-0xFF: a field of a known block

void put(std::vector<std::byte>& image, std::size_t offset, std::size_t width, std::uint64_t value) {
  if (offset > image.size() || width > image.size() - offset) return;
  std::memcpy(image.data() + offset, &value, width);  // little-endian: the low bytes
}

void damage(hakobu::fuzz::Input& in, std::vector<std::byte>& registry, std::vector<std::byte>& heap) {
  static_assert(
      kHeaderOps == kSlotOps && kSlotOps + 6 * 8 == kFreeListOps &&
          kFreeListOps + hakobu::detail::kSizeClassCount == kPageMapOps,
      "the op ranges must follow each other: header fields, 6 slots x 8 fields, a free-list head per size class");
  while (!in.empty()) {
    const unsigned op = in.u8();
    if (op < kSlotOps) {
      const Field f = kHeaderFields[op];
      put(registry, f.offset, f.width, hakobu::fuzz::resolve(in.u64(), g_blocks));
    } else if (op < kFreeListOps) {
      const Field f = kSlotFields[(op - kSlotOps) % 8];
      const std::size_t at = offsetof(RegistryHeader, processes) + (op - kSlotOps) / 8 * sizeof(ProcessSlot);
      put(registry, at + f.offset, f.width, hakobu::fuzz::resolve(in.u64(), g_blocks));
    } else if (op < kPageMapOps) {
      const std::size_t at =
          offsetof(RegistryHeader, free_lists) + (op - kFreeListOps) * sizeof(hakobu::detail::FreeList);
      put(registry, at, 8, hakobu::fuzz::resolve(in.u64(), g_blocks));
    } else if (op < kBlockOps) {
      const std::size_t word = in.u16();
      put(registry, hakobu::detail::page_map_offset() + word * 8, 8, in.u64());
    } else {
      const std::uint64_t block = g_blocks[in.u8() % g_blocks.size()];
      const unsigned field = op - kBlockOps;
      std::uint16_t index = 0;
      if (field == static_cast<unsigned>(BlockField::PayloadWord)) index = in.u16();
      if (field == static_cast<unsigned>(BlockField::AttachmentEntry)) index = in.u8();
      const std::uint64_t value = hakobu::fuzz::resolve(in.u64(), g_blocks);
      if (field >= static_cast<unsigned>(BlockField::Count)) continue;
      if (block > g_heap.size() || g_heap.size() - block < sizeof(hakobu::detail::BlockHeader)) continue;
      // The block's extent and table before any damage (from the template).
      hakobu::detail::BlockHeader original{};
      std::memcpy(static_cast<void*>(&original), g_heap.data() + block, sizeof original);
      const std::uint64_t limit =
          std::min<std::uint64_t>(hakobu::detail::class_bytes(original.size_class), heap.size() - block);
      hakobu::fuzz::patch_block(heap.data(), heap.size(), block, limit, original.attachment_table,
                                static_cast<BlockField>(field), value, index);
    }
  }
}

void inspect(hakobu::Sample& sample) {
  hakobu::fuzz::touch(sample.bytes());
  for (std::size_t i = 0; i < 2; ++i) {
    if (auto a = sample.attachment(i)) hakobu::fuzz::touch(*a);
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  g_domain = hakobu::fuzz::domain_name("r");
  build_template();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const hakobu::fuzz::LeakCheck leaks(g_domain);
  std::vector<std::byte> registry = g_registry;
  std::vector<std::byte> heap = g_heap;
  hakobu::fuzz::Input in(data, size);
  damage(in, registry, heap);
  hakobu::fuzz::write_file(file("heap"), heap);
  hakobu::fuzz::write_file(file("q:keep"), g_queue);
  hakobu::fuzz::write_file(file("registry"), registry);

  const auto options = queue_options();
  auto domain = hakobu::Domain::open(options.domain);  // collects the dead child's garbage
  if (!domain) return 0;
  (void)domain->collect_garbage();
  (void)domain->stats();
  {
    std::vector<hakobu::Loan> loans;
    for (const std::size_t bytes : {std::size_t{300}, std::size_t{1000}, std::size_t{4096}, std::size_t{70000}}) {
      if (auto loan = domain->loan(bytes)) {
        std::memset(loan->bytes().data(), 0x55, bytes);
        loans.push_back(std::move(*loan));
      }
    }
  }
  auto queue = hakobu::Queue::open("keep", hakobu::OpenMode::AttachOnly, options);
  if (queue) {
    std::vector<hakobu::Sample> samples;
    for (int i = 0; i < 4; ++i) {
      auto sample = queue->try_get();
      if (!sample) continue;
      inspect(*sample);
      samples.push_back(std::move(*sample));
    }
    samples.clear();
    (void)domain->stats();
    (void)hakobu::Queue::remove("keep", g_domain);
  }
  return 0;
}
