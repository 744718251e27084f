// hakobu example — stage 2 of examples/pipeline written in C++: what infer.py
// does with hakobu.serve, over the same named queues, so it can stand in for
// it between the Python decode.py and postprocess.py.
//
//   hakobu_pipeline_infer [INPUT=frames] [OUTPUT=features] [CAPACITY=4]
//
// CAPACITY: messages each queue holds, if this program creates it (as the
// Python stages' --capacity).
//
// Each float64 array that arrives (as NumPy sent it: any shape, any strides)
// gets 1 added to every element in place, and the very same shared memory is
// forwarded to OUTPUT without a copy: the new message refers to the received
// block, which stays alive until the next stage lets go of it.
//
// End of stream: OUTPUT counts this program as a sender from the moment it
// opens it (QueueOptions::sends), so the next stage cannot see the stream end
// before this one did. When INPUT ends (GetError::Ended: every sender closed
// it and it is drained) the program closes OUTPUT normally; when a sender
// before it failed or died (GetError::SendersLost), or anything goes wrong
// here, it closes OUTPUT as failed, and the next stage gets SendersLost once
// it has drained what was sent. Killed (Ctrl-C), it is a sender that died:
// the next stage notices that too.
//
// Exit status: 0 when the stream ended normally, 3 when it was lost upstream,
// 1 on any other error, 2 on a usage error.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <hakobu/hakobu.hpp>
#include <span>
#include <string>

namespace {

constexpr int kLostUpstream = 3;

/// Adds 1 to every element of a float64 array laid out as `view` says
/// (strides in bytes, possibly negative: Sample::array() bounds-checked them).
void add_one(const hakobu::ArrayView& view, std::size_t dim, std::byte* at) {
  if (dim == 0 && view.is_c_contiguous()) {         // the usual case: one flat loop
    auto* element = reinterpret_cast<double*>(at);  // NOLINT(cppcoreguidelines-pro-type-reinterpret-cast)
    for (std::int64_t i = 0; i < view.size(); ++i) element[i] += 1.0;
    return;
  }
  if (dim == view.ndim()) {
    *reinterpret_cast<double*>(at) += 1.0;  // NOLINT(cppcoreguidelines-pro-type-reinterpret-cast)
    return;
  }
  for (std::int64_t i = 0; i < view.shape[dim]; ++i) add_one(view, dim + 1, at + i * view.strides[dim]);
}

/// Sends the array `view` of `sample` on `output` without copying its elements:
/// a small metadata message that refers to the block holding them. A small
/// message that arrived inline (not in shared memory) is copied instead.
/// Returns an error message, empty on success.
std::string forward(hakobu::Queue& output, const hakobu::Sample& sample, const hakobu::ArrayView& view) {
  if (!sample.in_shared_memory()) {
    if (!view.is_c_contiguous()) return "a small array that is not C-contiguous";
    auto sent = output.put_array(view.data, view.dtype, view.shape);
    return sent ? std::string() : sent.error().message;
  }
  // The elements follow the metadata (0), or lie in attachment `source - 1`
  // (an array that was itself forwarded by reference).
  const std::uint32_t source = hakobu::array_data_attachment(sample.bytes());
  const std::byte* base = sample.bytes().data();
  if (source != 0) {
    auto attachment = sample.attachment(source - 1);
    if (!attachment) return attachment.error().message;
    base = attachment->data();
  }
  auto loan = output.loan_array_ref(view.dtype, view.shape, view.strides, view.data - base, view.typestr);
  if (!loan) return loan.error().message;
  auto attached = source == 0 ? loan->attach(sample) : loan->attach(sample, source - 1);
  if (!attached) return attached.error().message;
  auto sent = output.put(*loan);
  return sent ? std::string() : sent.error().message;
}

}  // namespace

int main(int argc, char** argv) {
  char* end = nullptr;
  const long capacity = argc > 3 ? std::strtol(argv[3], &end, 10) : 4;
  if (argc > 4 || capacity <= 0 || (end != nullptr && *end != '\0')) {
    std::fprintf(stderr, "usage: %s [INPUT=frames] [OUTPUT=features] [CAPACITY=4]\n", argv[0]);
    return 2;
  }
  const std::string input_name = argc > 1 ? argv[1] : "frames";
  const std::string output_name = argc > 2 ? argv[2] : "features";

  // The output first, as a sender from the start; then the input (either may
  // be created here: the programs start in any order).
  hakobu::QueueOptions receiving;
  receiving.capacity = static_cast<std::size_t>(capacity);
  hakobu::QueueOptions sending = receiving;
  sending.sends = true;
  auto output = hakobu::Queue::open(output_name, hakobu::OpenMode::CreateOrAttach, sending);
  if (!output) {
    std::fprintf(stderr, "infer: cannot open queue '%s': %s\n", output_name.c_str(), output.error().message.c_str());
    return 1;
  }
  auto input = hakobu::Queue::open(input_name, hakobu::OpenMode::CreateOrAttach, receiving);
  if (!input) {
    std::fprintf(stderr, "infer: cannot open queue '%s': %s\n", input_name.c_str(), input.error().message.c_str());
    output->close(hakobu::Ending::Failed);
    return 1;
  }

  long handled = 0;
  for (;;) {
    auto sample = input->get();
    if (!sample) {
      switch (sample.error().code) {
        case hakobu::GetError::Ended:
          output->close();  // the next stage ends once it has drained what was sent
          std::printf("infer (C++): %ld arrays, the stream ended\n", handled);
          return 0;
        case hakobu::GetError::SendersLost:
          output->close(hakobu::Ending::Failed);  // the failure flows downstream
          std::fprintf(stderr, "infer (C++): after %ld arrays, a stage before this one failed or died\n", handled);
          return kLostUpstream;
        default:
          output->close(hakobu::Ending::Failed);
          std::fprintf(stderr, "infer (C++): get failed: %s\n", sample.error().message.c_str());
          return 1;
      }
    }
    auto view = sample->array();
    if (!view || view->dtype != hakobu::DType::of<double>() || (!view->typestr.empty() && view->typestr != "<f8")) {
      output->close(hakobu::Ending::Failed);
      std::fprintf(stderr, "infer (C++): message %ld is not a float64 array%s%s\n", handled, view ? "" : ": ",
                   view ? "" : view.error().message.c_str());
      return 1;
    }
    add_one(*view, 0, view->data);  // the work of this stage: a += 1, in place
    if (const std::string failed = forward(*output, *sample, *view); !failed.empty()) {
      output->close(hakobu::Ending::Failed);
      std::fprintf(stderr, "infer (C++): put failed: %s\n", failed.c_str());
      return 1;
    }
    ++handled;
  }
}
