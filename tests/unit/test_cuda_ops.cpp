// Every op with a CUDA twin, on the GPU against its CPU implementation, on awkward sizes. The
// suite exits 77 (skipped) where no GPU is visible (cuda_main.cpp); CI builds it but cannot run
// it.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <tuple>

#include "kernels/cuda/cuda_ops.h"
#include "kernels/ops.h"
#include "tests/support/batch_norm_on_zero.h"
#include "tests/support/batch_norm_stages.h"
#include "tests/support/difference.h"
#include "tests/support/gpu_op_shapes.h"
#include "tests/support/host_tensor.h"

using namespace psgd;
using namespace psgd::test;

namespace {

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
void compare(const char* what, int inputs,
             const std::function<void(Context&, std::vector<Tensor>&)>& op) {
  Context cpu(Device::CPU, 2, 3), gpu(Device::CUDA, 2, 3);
  for (int64_t n : kElementCounts) {
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

// A tensor on both devices with the same values.
struct Twin {
  HostTensor host;
  DeviceCopy device;
  Twin(Shape shape, float lo, float hi, uint64_t stream)
      : host(shape), device((fill_uniform(host.t(), lo, hi, 2, stream), host.t())) {}
  void expect_close(const char* what, double tolerance) const {
    const std::vector<float> got = device.host();
    double scale = 1e-30, worst = 0.0;
    int64_t non_finite = 0;
    for (int64_t i = 0; i < host.numel(); ++i) {
      scale = std::max(scale, std::fabs(static_cast<double>(host[i])));
      worst = worse_difference(worst, got[i], host[i]);
      non_finite += !std::isfinite(host[i]);
    }
    INFO(what, ": worst difference ", worst, " at scale ", scale);
    CHECK(worst / scale <= tolerance);
    // NaN on both sides compares equal: a NaN from the CPU means the case tests nothing.
    CHECK(non_finite == 0);
  }
};

using TwinList = std::vector<std::unique_ptr<Twin>>;

// Runs op on the CPU tensors and on the GPU tensors, then compares every tensor. The GPU runs
// strict float32 unless `math` allows TF32.
void run_both(TwinList& ts, const std::function<void(Context&, const std::vector<Tensor>&)>& op,
              const char* what, double tolerance, Numerics math = {.tf32 = false}) {
  Context cpu(Device::CPU, 2, 3), gpu(Device::CUDA, 2, 3, math);
  std::vector<Tensor> on_cpu, on_gpu;
  for (auto& t : ts) {
    on_cpu.push_back(t->host.t());
    on_gpu.push_back(t->device.t);
  }
  op(cpu, on_cpu);
  op(gpu, on_gpu);
  for (auto& t : ts) t->expect_close(what, tolerance);
}

}  // namespace

TEST_CASE("cuda: ReLU, add and gradient routing equal the CPU") {
  compare("relu_forward", 1,
          [](Context& c, std::vector<Tensor>& t) { ops::relu_forward(c, t[0], t[1]); });
  for (ops::GradMode mode : {ops::GradMode::Overwrite, ops::GradMode::Accumulate}) {
    compare("relu_backward", 2, [=](Context& c, std::vector<Tensor>& t) {
      ops::relu_backward(c, t[0], t[1], t[2], mode);
    });
    compare("grad_pass", 1,
            [=](Context& c, std::vector<Tensor>& t) { ops::grad_pass(c, t[0], t[1], mode); });
  }
  compare("add_forward", 2,
          [](Context& c, std::vector<Tensor>& t) { ops::add_forward(c, t[0], t[1], t[2]); });
  compare("add_relu_forward", 2,
          [](Context& c, std::vector<Tensor>& t) { ops::add_relu_forward(c, t[0], t[1], t[2]); });
}

TEST_CASE("cuda: dropout draws the CPU's masks, with the index in device memory too") {
  int32_t host_index = 41;
  DeviceBuffer device_index(Device::CUDA, sizeof(int32_t));
  memory_copy(device_index.data(), Device::CUDA, &host_index, Device::CPU, sizeof host_index);
  const Tensor on_cpu(&host_index, Shape{1}, Device::CPU);
  const Tensor on_gpu(reinterpret_cast<int32_t*>(device_index.data()), Shape{1}, Device::CUDA);
  compare("dropout_forward (index)", 1, [&](Context& c, std::vector<Tensor>& t) {
    ops::dropout_forward(c, t[0], 0.3f, 9, uint64_t{4} << 32, t[1],
                         c.device() == Device::CPU ? on_cpu : on_gpu);
  });
  compare("dropout_forward", 1, [](Context& c, std::vector<Tensor>& t) {
    ops::dropout_forward(c, t[0], 0.3f, 9, 4, t[1]);
  });
  compare("dropout_backward", 1, [](Context& c, std::vector<Tensor>& t) {
    ops::dropout_backward(c, t[0], 0.5f, 9, 4, t[1], ops::GradMode::Accumulate);
  });
}

TEST_CASE("cuda: weight and activation quantization equal the CPU") {
  compare("quantize_weights", 1, [](Context& c, std::vector<Tensor>& t) {
    ops::quantize_weights(c, t[0], 0.3f, 7, t[1]);
  });
  compare("quantize_activations", 1, [](Context& c, std::vector<Tensor>& t) {
    ops::quantize_activations(c, t[0], 0.1f, 15, t[1]);
  });
}

TEST_CASE("cuda: batch norm, training and evaluation, forward and backward") {
  for (const Shape& x : batch_norm_shapes()) {
    CAPTURE(x.str());
    const Shape c{x[1]};
    TwinList t;
    for (const auto& [shape, lo, hi] : {std::tuple{x, -2.0f, 3.0f},
                                        {c, 0.5f, 1.5f},
                                        {c, -0.5f, 0.5f},
                                        {c, -0.5f, 0.5f},
                                        {c, 0.5f, 1.5f},
                                        {x, 0.0f, 0.0f},
                                        {c, 0.0f, 0.0f},
                                        {c, 0.0f, 0.0f},
                                        {x, -1.0f, 1.0f},
                                        {x, 0.0f, 0.0f},
                                        {c, 0.0f, 0.0f},
                                        {c, 0.0f, 0.0f}})
      t.push_back(std::make_unique<Twin>(shape, lo, hi, t.size()));
    run_both(
        t,
        [](Context& ctx, const std::vector<Tensor>& v) {
          ctx.reserve_workspace(ops::batch_norm_workspace_floats(ctx, v[0].shape));
          ops::batch_norm_forward_train(ctx, v[0], v[1], v[2], v[3], v[4], {}, v[5], v[6], v[7]);
          ops::batch_norm_backward(ctx, v[0], v[8], v[1], v[6], v[7], v[9],
                                   ops::GradMode::Overwrite, v[10], v[11]);
          ops::batch_norm_forward_eval(ctx, v[0], v[1], v[2], v[3], v[4], {}, v[5]);
        },
        "batch_norm", 1e-5);
    run_both(
        t,
        [](Context& ctx, const std::vector<Tensor>& v) {  // with the ReLU fused
          const ops::BatchNormParams relu{.relu = true};
          ctx.reserve_workspace(ops::batch_norm_workspace_floats(ctx, v[0].shape));
          ops::batch_norm_forward_train(ctx, v[0], v[1], v[2], v[3], v[4], relu, v[5], v[6], v[7]);
          ops::batch_norm_backward(ctx, v[0], v[8], v[1], v[6], v[7], v[9],
                                   ops::GradMode::Accumulate, v[10], v[11], {.output = v[5]});
          ops::batch_norm_forward_eval(ctx, v[0], v[1], v[2], v[3], v[4], relu, v[5]);
        },
        "batch_norm + relu", 1e-5);
    run_both(
        t,
        [](Context& ctx, const std::vector<Tensor>& v) {  // the ReLU's mask recomputed from x
          const ops::BatchNormParams relu{.relu = true};
          ctx.reserve_workspace(ops::batch_norm_workspace_floats(ctx, v[0].shape));
          ops::batch_norm_forward_train(ctx, v[0], v[1], v[2], v[3], v[4], relu, v[5], v[6], v[7]);
          ops::batch_norm_backward(ctx, v[0], v[8], v[1], v[6], v[7], v[9],
                                   ops::GradMode::Accumulate, v[10], v[11], {.beta = v[2]});
        },
        "batch_norm + relu, mask from x", 1e-5);
    t.push_back(std::make_unique<Twin>(x, -1.0f, 1.0f, t.size()));  // a residual
    for (int i = 0; i < 2; ++i)  // dgamma and dbeta of a backward pass without dx
      t.push_back(std::make_unique<Twin>(c, 0.0f, 0.0f, t.size()));
    run_both(
        t,
        [](Context& ctx, const std::vector<Tensor>& v) {  // with a residual join and the ReLU
          const ops::BatchNormParams relu{.relu = true};
          ctx.reserve_workspace(ops::batch_norm_workspace_floats(ctx, v[0].shape));
          ops::batch_norm_forward_train(ctx, v[0], v[1], v[2], v[3], v[4], relu, v[5], v[6], v[7],
                                        v[12]);
          ops::batch_norm_backward(ctx, v[0], v[8], v[1], v[6], v[7], v[9],
                                   ops::GradMode::Overwrite, v[10], v[11], {.output = v[5]});
          ops::batch_norm_backward(ctx, v[0], v[8], v[1], v[6], v[7], Tensor{},
                                   ops::GradMode::Overwrite, v[13], v[14], {.output = v[5]});
          ops::batch_norm_forward_eval(ctx, v[0], v[1], v[2], v[3], v[4], relu, v[5], v[12]);
        },
        "batch_norm + add + relu", 1e-5);
  }
}

TEST_CASE("cuda: batch norm + ReLU backward recomputes the ReLU's mask as the forward took it") {
  // One block per channel both ways (ResNet stage 3's 8,192 values, 4-wide; 315 values, scalar)
  // and the split passes both ways (stage 1's 32x32 planes, 4-wide; planes of 285, scalar).
  Context ctx(Device::CUDA, 2, 3);
  check_relu_mask_on_zero(
      ctx, {Shape{128, 8, 8, 8}, Shape{3, 5, 7, 15}, Shape{32, 4, 32, 32}, Shape{64, 3, 15, 19}},
      BothSidesIn::EachShape);
}

TEST_CASE("cuda: average and max pooling, forward and backward, overlapping windows") {
  for (const PoolShape& c : pool_shapes()) {
    CAPTURE(c.x.str());
    const ops::Pool2dGeometry g = c.g;
    const Shape y = ops::pool2d_output_shape(c.x, g);
    TwinList t;
    for (const Shape& s : {c.x, y, y, c.x, c.x, c.x})  // x, y, dy, then three gradients of x
      t.push_back(std::make_unique<Twin>(s, -1.0f, 1.0f, t.size()));
    run_both(
        t,
        [g](Context& ctx, const std::vector<Tensor>& v) {
          ops::avg_pool_forward(ctx, v[0], g, v[1]);
          ops::avg_pool_backward(ctx, v[2], g, v[3], ops::GradMode::Accumulate);
          ops::max_pool_forward(ctx, v[0], g, v[1]);
          ops::max_pool_backward(ctx, v[0], v[2], g, v[4], ops::GradMode::Overwrite);
          ops::max_pool_backward(ctx, v[0], v[2], g, v[5], ops::GradMode::Accumulate);
        },
        "pooling", 1e-6);
  }
}

TEST_CASE("cuda: softmax cross-entropy, top-k and the min/max reduction") {
  for (const auto& [rows, classes] : loss_shapes()) {
    CAPTURE(rows);
    CAPTURE(classes);
    std::vector<int32_t> labels(static_cast<size_t>(rows));
    for (int64_t i = 0; i < rows; ++i) labels[i] = static_cast<int32_t>((i * 37) % classes);
    DeviceBuffer device_labels(Device::CUDA, labels.size() * sizeof(int32_t));
    memory_copy(device_labels.data(), Device::CUDA, labels.data(), Device::CPU, labels.size() * 4);
    const Tensor host_y(labels.data(), Shape{rows}, Device::CPU);
    const Tensor gpu_y(reinterpret_cast<int32_t*>(device_labels.data()), Shape{rows}, Device::CUDA);
    TwinList t;
    for (const Shape& s : {Shape{rows, classes}, Shape{1}, Shape{rows, classes}, Shape{2}})
      t.push_back(std::make_unique<Twin>(s, -4.0f, 4.0f, t.size()));
    int64_t correct[2][3] = {};
    run_both(
        t,
        [&](Context& ctx, const std::vector<Tensor>& v) {
          const Tensor& y = ctx.device() == Device::CPU ? host_y : gpu_y;
          ops::softmax_cross_entropy(ctx, v[0], y, v[1], v[2]);
          ops::tensor_min_max(ctx, v[0], v[3]);
          for (int k : {1, 5, 100})
            correct[ctx.device() == Device::CUDA][k == 1   ? 0
                                                  : k == 5 ? 1
                                                           : 2] =
                ops::topk_correct(ctx, v[0], y, k);
        },
        "loss", 1e-6);
    for (int k = 0; k < 3; ++k) CHECK(correct[0][k] == correct[1][k]);
  }
}

TEST_CASE("cuda: the PSGD optimizer step in one launch, SGD and Adam, grid and zero targets") {
  const int64_t large = 128 * ops::kRangeChunk + 7, chunk = ops::kRangeChunk;
  const int64_t n = 1000 + large + chunk + 10;
  using ops::PsgTarget;
  // {offset, count, target, levels, range, first chunk}: a grid tensor, a zero-target one, a
  // 2-bit grid tensor of 3 values, a plain one, a grid tensor whose range takes 129 chunks, one
  // of exactly one chunk, and a plain one last. The large one is longer than the update's grid
  // (2,048 blocks of 256 threads), so most of its threads' second elements lie in it too, and
  // some threads' third elements in the last two tensors.
  const auto grid = int32_t(PsgTarget::Grid), none = int32_t(PsgTarget::None);
  // clang-format off
  std::vector<int32_t> table = {
      0,               300,   grid,                     7, 0,  0,
      300,             200,   int32_t(PsgTarget::Zero), 0, -1, 0,
      500,             3,     grid,                     1, 1,  0,
      503,             497,   none,                     0, -1, 0,
      1000,            large, grid,                     7, 2,  0,
      int32_t(1000 + large), chunk, grid,               7, 3,  0,
      int32_t(n - 10), 10,    none,                     0, -1, 0};
  // clang-format on
  const int64_t rows = static_cast<int64_t>(table.size()) / ops::kSegmentFields;
  const Shape table_shape{rows, ops::kSegmentFields};
  const int64_t chunks = ops::number_range_chunks(table.data(), rows);
  REQUIRE(chunks == 1 + 1 + 129 + 1);
  DeviceBuffer gpu_table(Device::CUDA, table.size() * sizeof(int32_t));
  memory_copy(gpu_table.data(), Device::CUDA, table.data(), Device::CPU,
              table.size() * sizeof(int32_t));
  const Tensor host_t(table.data(), table_shape, Device::CPU);
  const Tensor gpu_t(reinterpret_cast<int32_t*>(gpu_table.data()), table_shape, Device::CUDA);
  TwinList t;
  // Weights, gradients, momentum or first moment, and the second moment, which is never negative.
  for (int i = 0; i < 4; ++i)
    t.push_back(std::make_unique<Twin>(Shape{n}, i == 3 ? 0.0f : -0.3f, 0.3f, i));
  t.push_back(std::make_unique<Twin>(Shape{4, 2}, 0.0f, 0.0f, 4));               // ranges
  t.push_back(std::make_unique<Twin>(Shape{ops::kHyperFields}, 0.0f, 0.0f, 5));  // hyper
  run_both(
      t,
      [&](Context& ctx, const std::vector<Tensor>& v) {
        const Tensor& segments = ctx.device() == Device::CPU ? host_t : gpu_t;
        // The step values are written on the device too; Adam's count starts at 3, so that its
        // bias corrections (hyper, a twin, is compared) tell whether the count was written.
        DeviceBuffer steps(ctx.device(), sizeof(double));
        const Tensor count = steps.f64(0, Shape{1});
        DeviceBuffer partials(ctx.device(), 2 * chunks * sizeof(float));  // the GPU's only
        for (bool first : {true, false}) {
          ops::update_weight_ranges(ctx, v[0], segments, v[4], partials.f32(0, Shape{chunks, 2}),
                                    first);
          ops::set_step_values(ctx, v[5], count, first ? 0.01f : 0.02f, first ? 0.0 : 1.0);
          ops::psgd_sgd_step(ctx, v[0], v[1], v[2], segments, v[4], v[5],
                             {0.9f, 1e-4f, 150.0f, first});
        }
        ops::set_step_values(ctx, v[5], count, 1e-3f, 3.0);
        for (int step = 0; step < 2; ++step) {
          ops::adam_advance(ctx, v[5], count, 0.9, 0.999);
          ops::psgd_adam_step(ctx, v[0], v[1], v[2], v[3], segments, v[4], v[5],
                              ops::AdamStep::from(0.9, 0.999, 1e-8f, 1e-4f, 150.0f));
        }
      },
      "optimizer", 1e-5);
}

namespace {

// Whether the GPU has the tensor-core kernels' TF32 mma.sync (from Ampere on); the race never
// offers them elsewhere.
bool tensor_cores_present() {
  if (cuda::conv2d_tensor_core_available(0)) return true;
  MESSAGE("no TF32 tensor cores on this GPU: psgd's tensor-core kernels are not tested");
  return false;
}

// With the tensor-core kernels forced, each direction runs on them where they serve the shape.
void check_tensor_core_routes(const Context& ctx, const ConvShape& c) {
  const std::string routes = cuda::conv2d_routes(ctx, c.x, c.w, c.g);
  INFO(routes);
  const bool available = tensor_cores_present();
  CHECK((routes.find("forward tensor-core") != std::string::npos) ==
        (available && cuda::conv2d_tensor_core_supported(c.x, c.w, c.g)));
  CHECK((routes.find("backward-data tensor-core") != std::string::npos) ==
        (available && cuda::conv2d_tensor_core_data_supported(c.x, c.w, c.g)));
  CHECK((routes.find("backward-filter tensor-core") != std::string::npos) ==
        (available && cuda::conv2d_tensor_core_filter_supported(c.x, c.w, c.g)));
}

}  // namespace

TEST_CASE("cuda: convolution through cuDNN or psgd's tensor cores, strict float32 and TF32") {
  // TF32 also with psgd's tensor-core kernels forced where they serve (the stem's and the first
  // stage's three directions and the even stride-2 shape's).
  for (const ConvShape& c : conv_shapes()) {
    for (const Numerics math : {Numerics{.tf32 = false}, Numerics{.tf32 = true},
                                Numerics{.tf32 = true, .conv = Numerics::Conv::TensorCore}}) {
      const bool tf32 = math.tf32;
      CAPTURE(c.x.str());
      CAPTURE(tf32);
      CAPTURE(int(math.conv));
      const Shape y = ops::conv2d_output_shape(c.x, c.w, c.g);
      TwinList t;
      for (const Shape& s : {c.x, c.w, y, y, c.x, c.w})
        t.push_back(std::make_unique<Twin>(s, -1.0f, 1.0f, t.size()));
      run_both(
          t,
          [&](Context& ctx, const std::vector<Tensor>& v) {
            ctx.reserve_workspace(ops::conv2d_workspace_floats(ctx, c.x, c.w, c.g));
            ops::conv2d_forward(ctx, v[0], v[1], c.g, v[2]);
            ops::conv2d_backward(ctx, v[0], v[1], v[3], c.g, v[4], ops::GradMode::Accumulate, v[5]);
            if (ctx.device() == Device::CUDA && math.conv == Numerics::Conv::TensorCore)
              check_tensor_core_routes(ctx, c);
          },
          "conv2d", tf32 ? 1e-3 : 1e-5, math);
    }
  }
}

namespace {

// One of psgd's own 3x3 kernels (forward and data gradient, in both gradient modes) against the
// CPU's convolution, on shapes it serves.
struct Kernel3x3 {
  std::function<void(const Tensor& x, const void* w, const Shape& w_shape, const Tensor& y)>
      forward;
  std::function<void(const Tensor& dy, const void* w, const Shape& w_shape, ops::GradMode mode,
                     const Tensor& dx)>
      backward_data;
};

void compare_3x3(std::span<const ConvShape> shapes, Kernel3x3 kernel, const char* what,
                 double tolerance) {
  for (const ConvShape& c : shapes) {
    CAPTURE(c.x.str());
    CAPTURE(c.w.str());
    const Shape y = ops::conv2d_output_shape(c.x, c.w, c.g);
    for (const ops::GradMode mode : {ops::GradMode::Overwrite, ops::GradMode::Accumulate}) {
      CAPTURE(int(mode));
      TwinList t;  // x, w, y, dy, dx
      for (const Shape& s : {c.x, c.w, y, y, c.x})
        t.push_back(std::make_unique<Twin>(s, -1.0f, 1.0f, t.size()));
      HostTensor dw(c.w);  // the CPU's filter gradient, not compared
      run_both(
          t,
          [&](Context& ctx, const std::vector<Tensor>& v) {
            if (ctx.device() == Device::CUDA) {
              kernel.forward(v[0], v[1].data, c.w, v[2]);
              kernel.backward_data(v[3], v[1].data, c.w, mode, v[4]);
              return;
            }
            ctx.reserve_workspace(ops::conv2d_workspace_floats(ctx, c.x, c.w, c.g));
            ops::conv2d_forward(ctx, v[0], v[1], c.g, v[2]);
            ops::conv2d_backward(ctx, v[0], v[1], v[3], c.g, v[4], mode, dw.t());
          },
          what, tolerance);
    }
  }
}

}  // namespace

TEST_CASE("cuda: psgd's direct 3x3 convolution, forward and data gradient, equals the CPU") {
  const auto shapes = direct_conv_shapes();
  for (const ConvShape& c : shapes) REQUIRE(cuda::conv2d_direct_supported(c.w, c.g));
  compare_3x3(shapes, {cuda::conv2d_direct_forward, cuda::conv2d_direct_backward_data},
              "direct conv2d", 1e-5);
}

TEST_CASE(
    "cuda: psgd's tensor-core 3x3 convolution, forward and data gradient, strides 1 and 2, equals "
    "the CPU") {
  if (!tensor_cores_present()) return;
  const auto compare = [](std::span<const ConvShape> shapes, int stride) {
    for (const ConvShape& c : shapes) {
      REQUIRE(cuda::conv2d_tensor_core_supported(c.x, c.w, c.g));
      REQUIRE(cuda::conv2d_tensor_core_data_supported(c.x, c.w, c.g));
    }
    const auto forward = [stride](const Tensor& x, const void* w, const Shape& w_shape,
                                  const Tensor& y) {
      cuda::conv2d_tensor_core_forward(x, w, w_shape, stride, y);
    };
    const auto data = [stride](const Tensor& dy, const void* w, const Shape& w_shape,
                               ops::GradMode mode, const Tensor& dx) {
      cuda::conv2d_tensor_core_backward_data(dy, w, w_shape, stride, mode, dx);
    };
    compare_3x3(shapes, {forward, data}, "tensor-core conv2d", 1e-3);
  };
  compare(tensor_core_conv_shapes(), 1);
  compare(tensor_core_stride2_shapes(), 2);
  // The kernels serve 3x3 convolutions of padding 1, stride 1 or stride 2 on even sizes, in
  // widths whose staged rows fit a block's shared memory.
  CHECK(cuda::conv2d_tensor_core_supported({2, 16, 8, 8}, {16, 16, 3, 3}, {2, 1}));
  CHECK(cuda::conv2d_tensor_core_data_supported({2, 16, 8, 8}, {16, 16, 3, 3}, {2, 1}));
  CHECK_FALSE(cuda::conv2d_tensor_core_supported({2, 16, 7, 8}, {16, 16, 3, 3}, {2, 1}));
  CHECK_FALSE(cuda::conv2d_tensor_core_data_supported({2, 16, 7, 8}, {16, 16, 3, 3}, {2, 1}));
  CHECK_FALSE(cuda::conv2d_tensor_core_supported({2, 16, 8, 8}, {16, 16, 1, 1}, {1, 0}));
  CHECK_FALSE(cuda::conv2d_tensor_core_supported({1, 16, 2, 4096}, {16, 16, 3, 3}, {1, 1}));
  CHECK(cuda::conv2d_tensor_core_supported({1, 512, 2, 2}, {512, 512, 3, 3}, {1, 1}));
}

TEST_CASE("cuda: psgd's tensor-core filter gradient equals the CPU") {
  if (!tensor_cores_present()) return;
  for (const ConvShape& c : tensor_core_filter_shapes()) {
    CAPTURE(c.x.str());
    CAPTURE(c.w.str());
    CAPTURE(c.g.stride);
    REQUIRE(cuda::conv2d_tensor_core_filter_supported(c.x, c.w, c.g));
    const Shape y = ops::conv2d_output_shape(c.x, c.w, c.g);
    TwinList t;  // x, w, dy, dw
    for (const Shape& s : {c.x, c.w, y, c.w})
      t.push_back(std::make_unique<Twin>(s, -1.0f, 1.0f, t.size()));
    HostTensor dx(c.x);  // the CPU's input gradient, not compared
    const int64_t partial_floats =
        cuda::conv2d_tensor_core_filter_workspace_floats(c.x, c.w, c.g.stride);
    const DeviceBuffer partials(Device::CUDA, sizeof(float) * partial_floats);
    run_both(
        t,
        [&](Context& ctx, const std::vector<Tensor>& v) {
          if (ctx.device() == Device::CUDA)
            return cuda::conv2d_tensor_core_backward_filter(
                v[0], v[2], c.w, c.g.stride, partials.f32(0, Shape{partial_floats}), v[3]);
          ctx.reserve_workspace(ops::conv2d_workspace_floats(ctx, c.x, c.w, c.g));
          ops::conv2d_backward(ctx, v[0], v[1], v[2], c.g, dx.t(), ops::GradMode::Overwrite, v[3]);
        },
        "tensor-core filter gradient", 1e-3);
  }
  // An empty batch gives a filter gradient of zeros, as on the CPU.
  const Shape w{8, 8, 3, 3};
  const DeviceBuffer dw(Device::CUDA, sizeof(float) * w.numel()), none(Device::CUDA, 0);
  const Tensor empty(static_cast<float*>(nullptr), Shape{0, 8, 8, 8}, Device::CUDA);
  CHECK(cuda::conv2d_tensor_core_filter_workspace_floats(empty.shape, w, 1) == 0);
  const std::vector<float> stale(w.numel(), std::nanf(""));
  memory_copy(dw.data(), Device::CUDA, stale.data(), Device::CPU, sizeof(float) * stale.size());
  cuda::conv2d_tensor_core_backward_filter(empty, empty, w, 1, none.f32(0, Shape{0}), dw.f32(0, w));
  std::vector<float> got(w.numel(), 1.0f);
  memory_copy(got.data(), Device::CPU, dw.data(), Device::CUDA, sizeof(float) * got.size());
  CHECK(got == std::vector<float>(got.size(), 0.0f));
  // Output widths multiples of 8 (each k-step's pixels in one row).
  CHECK_FALSE(cuda::conv2d_tensor_core_filter_supported({3, 16, 9, 7}, {24, 16, 3, 3}, {1, 1}));
  CHECK_FALSE(cuda::conv2d_tensor_core_filter_supported({3, 16, 4, 4}, {24, 16, 3, 3}, {1, 1}));
  CHECK_FALSE(cuda::conv2d_tensor_core_filter_supported({3, 16, 8, 8}, {24, 16, 3, 3}, {2, 1}));
}

TEST_CASE("cuda: linear layers through cuBLAS") {
  for (const auto& [n, in, out] :
       {std::tuple<int64_t, int64_t, int64_t>{1, 64, 10}, {7, 13, 5}, {128, 512, 100}}) {
    CAPTURE(n);
    TwinList t;
    for (const Shape& s : {Shape{n, in}, Shape{out, in}, Shape{out}, Shape{n, out}, Shape{n, out},
                           Shape{n, in}, Shape{out, in}, Shape{out}})
      t.push_back(std::make_unique<Twin>(s, -1.0f, 1.0f, t.size()));
    run_both(
        t,
        [](Context& ctx, const std::vector<Tensor>& v) {
          ctx.reserve_workspace(ops::linear_workspace_floats(ctx, v[0].shape, v[1].shape));
          ops::linear_forward(ctx, v[0], v[1], v[2], v[3]);
          ops::linear_backward(ctx, v[0], v[1], v[4], v[5], ops::GradMode::Overwrite, v[6], v[7]);
        },
        "linear", 1e-5);
  }
}

TEST_CASE("cuda: synchronised batch norm's stages") {
  for (const Shape& x : batch_norm_shapes()) {
    CAPTURE(x.str());
    const Shape c{x[1]};
    TwinList t;
    for (const auto& [shape, lo, hi] : {std::tuple{x, 1.0f, 3.0f},
                                        {c, 0.5f, 1.5f},
                                        {c, -0.5f, 0.5f},
                                        {c, 1.5f, 2.5f},
                                        {c, 0.5f, 1.5f},
                                        {c, 0.0f, 0.0f},
                                        {c, 0.0f, 0.0f},
                                        {x, 0.0f, 0.0f},
                                        {x, -1.0f, 1.0f},
                                        {c, 0.0f, 0.0f},
                                        {c, 0.0f, 0.0f},
                                        {x, 0.0f, 0.0f}})
      t.push_back(std::make_unique<Twin>(shape, lo, hi, t.size()));
    run_both(
        t,
        [&](Context& ctx, const std::vector<Tensor>& v) {
          run_batch_norm_stages(ctx, v, c[0], ops::GradMode::Overwrite);
        },
        "batch_norm stages", 1e-5);
  }
}
