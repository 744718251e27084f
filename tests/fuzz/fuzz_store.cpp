// fuzz_store — a store file, its records and their value blocks damaged by
// another process, and every reader and writer of them: Store::attach (header
// checks), get (records, versions, attachments), keys, put of bytes and of a
// loan (probing, the insert lock, reuse of erased entries), erase, and the
// drain of the last handle after unlink.
//
// Each iteration builds a fresh domain fz<pid>s (16 MiB heap, no huge pages)
// with a store "s" of 8 entries holding:
//   "a"  300 inline bytes              (record block 0)
//   "b"  a 1000-byte loan, attached    (record block 1, its value block 2)
//   "c"  published, then erased        (an empty entry, reusable)
//
// Input: records (fuzz_support.hpp's format):
//   op 0x00-0x0F: header word (op & 15) = value
//   op 0x10-0x17: entry (op & 7), then a u8 word index (modulo 32) = value
//                 (word 0: state | key_bytes << 32, 1 key_hash, 2 current,
//                 3 generation, 4.. the key)
//   op 0x18-0x1F: entry (op & 7) current = pack_value(block (u8 index), u32 version bits)
//   op 0x20-0x4F: block ((op - 0x20) >> 4) field (op & 15) = value (BlockField;
//                 PayloadWord reads a u16 index first, AttachmentEntry a u8 index)
//   other ops:    ignored
// Block values may be block references (fuzz_support.hpp). The damage is
// written after the three keys were published; then a second handle attaches,
// and both run the calls above. A put of a new key may wait behind an insert
// lock named by a live token for its one second (then Busy): never longer, and
// once per handle (exercise stops putting new keys after a Busy).
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "domain/domain_state.hpp"
#include "fuzz_support.hpp"
#include "hakobu/hakobu.hpp"
#include "hakobu/store.hpp"
#include "memory/heap.hpp"
#include "store/store_file.hpp"

namespace {

using hakobu::fuzz::BlockField;

std::string g_domain;  // NOLINT(cppcoreguidelines-avoid-non-const-global-variables)

[[noreturn]] void harness_broken(const std::string& what) {
  hakobu::fuzz::harness_broken("fuzz_store", what);
}

hakobu::StoreOptions store_options() {
  hakobu::StoreOptions options;
  options.capacity = 8;
  options.domain = hakobu::fuzz::small_queue_options(g_domain, 1).domain;
  return options;
}

enum class Kind : std::uint8_t { Header, EntryWord, EntryCurrent, Block };

struct Record {
  Kind kind = Kind::Header;
  unsigned target = 0;  // header word, entry or block
  unsigned field = 0;   // entry word or block field
  std::uint16_t index = 0;
  std::uint32_t version = 0;
  std::uint64_t value = 0;
};

std::vector<Record> parse_records(hakobu::fuzz::Input& in) {
  std::vector<Record> out;
  while (!in.empty()) {
    const std::uint8_t op = in.u8();
    Record r;
    if (op < 0x10) {
      r.kind = Kind::Header;
      r.target = op;
    } else if (op < 0x18) {
      r.kind = Kind::EntryWord;
      r.target = op & 7U;
      r.field = in.u8() % 32U;
    } else if (op < 0x20) {
      r.kind = Kind::EntryCurrent;
      r.target = op & 7U;
      r.index = in.u8();
      r.version = static_cast<std::uint32_t>(in.u16()) | (static_cast<std::uint32_t>(in.u16()) << 16U);
      out.push_back(r);
      continue;
    } else if (op < 0x50) {
      r.kind = Kind::Block;
      r.target = (op - 0x20U) >> 4U;
      r.field = op & 15U;
      if (r.field >= static_cast<unsigned>(BlockField::Count)) continue;
      if (r.field == static_cast<unsigned>(BlockField::PayloadWord)) r.index = in.u16();
      if (r.field == static_cast<unsigned>(BlockField::AttachmentEntry)) r.index = in.u8();
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
  std::vector<std::uint64_t> limits;
  std::vector<std::uint64_t> tables;
};

void damage(const std::vector<Record>& records, const Known& known, hakobu::detail::Heap& heap,
            std::uint64_t heap_bytes) {
  hakobu::fuzz::MappedFile file("hakobu:" + g_domain + ":st:s");
  const std::size_t entries_at = sizeof(hakobu::detail::StoreHeader);
  if (file.size() < entries_at + 8 * sizeof(hakobu::detail::StoreEntry)) harness_broken("cannot map the store file");
  for (const auto& r : records) {
    const std::uint64_t value = hakobu::fuzz::resolve(r.value, known.offsets);
    switch (r.kind) {
      case Kind::Header: std::memcpy(file.data() + std::size_t{r.target} * 8, &value, 8); break;
      case Kind::EntryWord:
        std::memcpy(file.data() + entries_at + std::size_t{r.target} * sizeof(hakobu::detail::StoreEntry) +
                        std::size_t{r.field} * 8,
                    &value, 8);
        break;
      case Kind::EntryCurrent: {
        const std::uint64_t packed =
            hakobu::detail::pack_value(known.offsets[r.index % known.offsets.size()], r.version);
        std::memcpy(file.data() + entries_at + std::size_t{r.target} * sizeof(hakobu::detail::StoreEntry) + 16, &packed,
                    8);
        break;
      }
      case Kind::Block:
        if (r.target >= known.offsets.size()) break;
        hakobu::fuzz::patch_block(heap.base(), heap_bytes, known.offsets[r.target], known.limits[r.target],
                                  known.tables[r.target], static_cast<BlockField>(r.field), value, r.index);
        break;
    }
  }
}

void read_all(hakobu::Store& store) {
  for (const char* key : {"a", "b", "c", "d", "x"}) {
    auto value = store.get(key);
    if (!value) continue;
    hakobu::fuzz::touch(value->bytes());
    (void)value->version();
    if (value->kind() == hakobu::MessageKind::Array) (void)value->array();
  }
  for (const auto& key : store.keys()) (void)store.get(key);
}

void exercise(hakobu::Store& store) {
  read_all(store);
  const std::vector<std::byte> small(40, std::byte{0x5A});
  // A put of a new key behind an insert lock that a forged word says a live
  // process holds waits its one second, then says Busy. Once one did, the
  // others would too: stop putting new keys (each would cost another second,
  // and the input libFuzzer's timeout).
  bool busy = false;
  const auto put = [&](auto&&... args) {
    if (busy) return;
    auto done = store.put(std::forward<decltype(args)>(args)...);
    busy = !done && done.error().code == hakobu::StorePutError::Busy;
  };
  put("a", small);
  put("d", small, hakobu::MessageKind::Bytes, false);
  if (auto loan = store.loan(500)) put("x", std::move(*loan));
  (void)store.erase("b");
  (void)store.erase("c");
  for (int i = 0; i < 10; ++i) put("k" + std::to_string(i), small);  // fills, then Full
  read_all(store);
}

void run(const std::uint8_t* data, std::size_t size) {
  hakobu::fuzz::Input in(data, size);
  const std::vector<Record> records = parse_records(in);
  const auto options = store_options();
  auto store = hakobu::Store::create("s", options);
  if (!store) harness_broken(store.error().message);
  auto state_or = hakobu::detail::DomainState::attach(options.domain);
  if (!state_or) harness_broken(state_or.error().message);
  const std::shared_ptr<hakobu::detail::DomainState> state = *state_or;
  auto& heap = state->heap();

  const std::vector<std::byte> bytes(300, std::byte{0x3C});
  auto loan = store->loan(1000);
  if (!loan) harness_broken("loan");
  std::memset(loan->bytes().data(), 0x11, loan->bytes().size());
  if (!store->put("a", bytes) || !store->put("b", std::move(*loan)) || !store->put("c", bytes) || !store->erase("c")) {
    harness_broken("puts");
  }
  Known known;
  {
    hakobu::fuzz::MappedFile file("hakobu:" + g_domain + ":st:s");
    for (std::size_t i = 0; i < 8 && file.size() >= sizeof(hakobu::detail::StoreHeader) + 8 * 256; ++i) {
      const auto* entry = reinterpret_cast<const hakobu::detail::StoreEntry*>(  // NOLINT
          file.data() + sizeof(hakobu::detail::StoreHeader) + i * sizeof(hakobu::detail::StoreEntry));
      const std::uint64_t current = entry->current.load();
      if (hakobu::detail::has_value(current)) known.offsets.push_back(hakobu::detail::value_record(current));
    }
  }
  if (known.offsets.size() != 2) harness_broken("two records");
  if (heap.header(known.offsets[0])->attachment_count == 1) std::swap(known.offsets[0], known.offsets[1]);
  const auto table = heap.attachments(known.offsets[1]);
  if (table.empty()) harness_broken("the loan's record has no attachment");
  known.offsets.push_back(table[0].load());
  for (const auto b : known.offsets) {
    const auto* h = heap.header(b);
    known.limits.push_back(std::min(hakobu::detail::class_bytes(h->size_class), h->backed_bytes.load()));
    known.tables.push_back(h->attachment_table);
  }
  damage(records, known, heap, state->registry()->heap_top.load());

  {
    auto other = hakobu::Store::attach("s", options);
    if (other) exercise(*other);
  }
  exercise(*store);
  (void)store->unlink();  // the last handle drains the entries
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  g_domain = hakobu::fuzz::domain_name("s");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const hakobu::fuzz::LeakCheck leaks(g_domain);
  run(data, size);
  return 0;
}
