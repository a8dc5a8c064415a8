// Every op with a CUDA twin, on the GPU against its CPU implementation, on awkward sizes. The
// suite exits 77 (skipped) where no GPU is visible; CI builds it but cannot run it.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <functional>
#include <memory>

#include "kernels/ops.h"
#include "tests/support/host_tensor.h"

using namespace psgd;
using namespace psgd::test;

namespace {

constexpr int64_t kSizes[] = {1, 7, 1000, 1000003};

// A GPU copy of a host tensor, and back.
struct DeviceCopy {
  DeviceBuffer buffer;
  Tensor t;
  explicit DeviceCopy(const Tensor& host)
      : buffer(Device::CUDA, host.bytes()), t(buffer.f32(0, host.shape)) {
    memory_copy(t.data, Device::CUDA, host.data, Device::CPU, host.bytes());
  }
  std::vector<float> host() const {
    std::vector<float> out(static_cast<size_t>(t.numel()));
    memory_copy(out.data(), Device::CPU, t.data, Device::CUDA, t.bytes());
    return out;
  }
};

// Runs `op` on CPU tensors and on GPU copies of them (inputs filled in [-2, 2), the output
// prefilled with 0.5 so that accumulation is visible) and requires identical results.
void compare(const char* what, int inputs, const std::function<void(Context&, std::vector<Tensor>&)>& op) {
  Context cpu(Device::CPU, 2, 3), gpu(Device::CUDA, 2, 3);
  for (int64_t n : kSizes) {
    CAPTURE(what);
    CAPTURE(n);
    std::vector<std::unique_ptr<HostTensor>> host;
    std::vector<Tensor> on_cpu, on_gpu;
    std::vector<std::unique_ptr<DeviceCopy>> device;
    for (int i = 0; i <= inputs; ++i) {
      host.push_back(std::make_unique<HostTensor>(Shape{n}, 0.5f));
      if (i < inputs) fill_uniform(host.back()->t(), -2.0f, 2.0f, 1, static_cast<uint64_t>(i));
      device.push_back(std::make_unique<DeviceCopy>(host.back()->t()));
      on_cpu.push_back(host.back()->t());
      on_gpu.push_back(device.back()->t);
    }
    op(cpu, on_cpu);
    op(gpu, on_gpu);
    const std::vector<float> result = device.back()->host();
    for (int64_t i = 0; i < n; ++i) REQUIRE(result[i] == (*host.back())[i]);
  }
}

}  // namespace

TEST_CASE("cuda: ReLU, add and gradient routing equal the CPU") {
  compare("relu_forward", 1, [](Context& c, std::vector<Tensor>& t) { ops::relu_forward(c, t[0], t[1]); });
  for (ops::GradMode mode : {ops::GradMode::Overwrite, ops::GradMode::Accumulate}) {
    compare("relu_backward", 2, [=](Context& c, std::vector<Tensor>& t) { ops::relu_backward(c, t[0], t[1], t[2], mode); });
    compare("grad_pass", 1, [=](Context& c, std::vector<Tensor>& t) { ops::grad_pass(c, t[0], t[1], mode); });
  }
  compare("add_forward", 2, [](Context& c, std::vector<Tensor>& t) { ops::add_forward(c, t[0], t[1], t[2]); });
}

TEST_CASE("cuda: dropout draws the CPU's masks") {
  compare("dropout_forward", 1, [](Context& c, std::vector<Tensor>& t) { ops::dropout_forward(c, t[0], 0.3f, 9, 4, t[1]); });
  compare("dropout_backward", 1, [](Context& c, std::vector<Tensor>& t) {
    ops::dropout_backward(c, t[0], 0.5f, 9, 4, t[1], ops::GradMode::Accumulate);
  });
}

TEST_CASE("cuda: weight and activation quantization equal the CPU") {
  compare("quantize_weights", 1, [](Context& c, std::vector<Tensor>& t) { ops::quantize_weights(c, t[0], 0.3f, 7, t[1]); });
  compare("quantize_activations", 1, [](Context& c, std::vector<Tensor>& t) { ops::quantize_activations(c, t[0], 0.1f, 15, t[1]); });
}

int main(int argc, char** argv) {
  if (!cuda_available()) {
    std::puts("SKIP: no CUDA device visible (or psgd built without CUDA)");
    return 77;
  }
  doctest::Context context(argc, argv);
  return context.run();
}
