// Every op with a CUDA twin in the bf16 mode, on the GPU against its CPU implementation, on the
// awkward sizes of test_cuda_ops.cpp: activations and their gradients bfloat16; parameters, their
// gradients and statistics float32. Both devices compute in float32 from the same bf16 values
// (convolutions and linear layers from the weights' bf16 roundings on both) and round each stored
// value once. Ops without sums (ReLU, add, gradient routing, dropout, activation quantization,
// max pooling) must then agree to the bit; ops with sums in another order (cuDNN, cuBLAS, BN,
// average pooling with fused multiply-adds) to a couple of roundings.
// The suite exits 77 (skipped) where no GPU is visible (cuda_main.cpp).
#include <doctest/doctest.h>

#include <cmath>
#include <cstddef>
#include <functional>
#include <memory>
#include <tuple>
#include <vector>

#include "kernels/ops.h"
#include "tests/support/batch_norm_on_zero.h"
#include "tests/support/batch_norm_stages.h"
#include "tests/support/gpu_op_shapes.h"
#include "tests/support/host_tensor.h"

using namespace psgd;
using namespace psgd::test;

namespace {

constexpr Numerics kBf16{.bf16 = true};
constexpr Numerics kBf16Deterministic{.deterministic = true, .bf16 = true};
constexpr Numerics kBf16Direct{.bf16 = true, .conv = Numerics::Conv::Direct};
constexpr Numerics kBf16TensorCore{.bf16 = true, .conv = Numerics::Conv::TensorCore};
constexpr Numerics kBf16Widened{.bf16 = true, .conv = Numerics::Conv::Widened};
constexpr ops::GradMode kModes[] = {ops::GradMode::Overwrite, ops::GradMode::Accumulate};
constexpr DType BF16 = DType::BF16, F32 = DType::F32;

// bf16 allowance per element: two roundings relative to the values (a bf16 rounding moves a
// value by at most 2^-8 of it), plus a floor relative to the tensor's largest magnitude, for
// sums that cancel: there each bf16-rounded weight of the GPU counts against a small result.
constexpr double kBf16Relative = 0x1p-7;
constexpr double kBf16Floor = 0x1p-8;
// Float32 results: the worst difference relative to the tensor's largest magnitude. Convolution
// filter gradients come back from cuDNN at bf16 precision; other parameter gradients are float32
// sums of the same bf16 products in another order.
constexpr double kFilterGradients = 1e-2;
constexpr double kParamGradients = 1e-4;
constexpr double kStatistics = 1e-5;

// How bf16 results must agree: to the bit, or within a couple of roundings (below). A result
// that cuDNN's non-deterministic algorithms sum with atomic adds in bf16 (the backward-data
// algorithm 0 does, and picks it by timing) is rounded once per add: each moves it by up to
// 2^-8 of a partial sum, which is at most about the tensor's largest magnitude.
struct Bf16Match {
  bool exact = false;
  int atomic_adds = 0;
};
constexpr Bf16Match kExact{.exact = true};
constexpr Bf16Match kAllowance{};

// The values of a float32 or bf16 tensor on either device, widened to float.
std::vector<float> widened(const Tensor& t) {
  std::vector<std::byte> bytes(t.bytes());
  memory_copy(bytes.data(), Device::CPU, t.data, t.device, t.bytes());
  std::vector<float> out(static_cast<size_t>(t.numel()));
  with_activation_type(t.dtype, [&](auto e) {
    const auto* p = reinterpret_cast<const decltype(e)*>(bytes.data());
    for (int64_t i = 0; i < t.numel(); ++i) out[i] = load(p, i);
  });
  return out;
}

// A tensor on both devices with the same values, uniform in [lo, hi) and, for bf16, rounded on
// the host.
struct Twin {
  DeviceBuffer host, device;
  Tensor on_cpu, on_gpu;

  Twin(const Shape& shape, DType dtype, float lo, float hi, uint64_t stream)
      : host(Device::CPU, static_cast<size_t>(shape.numel()) * dtype_size(dtype)),
        device(Device::CUDA, host.bytes()),
        on_cpu(host.view(0, shape, dtype)),
        on_gpu(device.view(0, shape, dtype)) {
    HostTensor values(shape);
    fill_uniform(values.t(), lo, hi, 2, stream);
    with_activation_type(dtype, [&](auto e) {
      auto* p = on_cpu.as<decltype(e)>();
      for (int64_t i = 0; i < values.numel(); ++i) store(p, i, values[i]);
    });
    memory_copy(on_gpu.data, Device::CUDA, on_cpu.data, Device::CPU, on_cpu.bytes());
  }

  // The GPU's copy takes the CPU's values again, so that a comparison sees one op's differences,
  // not those an earlier op left in a tensor it accumulates into.
  void resync() {
    memory_copy(on_gpu.data, Device::CUDA, on_cpu.data, Device::CPU, on_cpu.bytes());
  }

  // bf16: every element equal, or within its allowance; float32: the worst difference within
  // `tolerance` of the largest magnitude.
  void expect_close(const char* what, Bf16Match match, double tolerance) const {
    const std::vector<float> want = widened(on_cpu), got = widened(on_gpu);
    double scale = 1e-30;
    for (float v : want) scale = std::max(scale, std::fabs(static_cast<double>(v)));
    double worst = 0.0;  // the largest difference in units of its allowance; NaN sticks
    int64_t at = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      const double a = want[i], b = got[i];
      const double allowance = on_cpu.dtype != BF16 ? tolerance * scale
                               : match.exact
                                   ? 0.0
                                   : kBf16Relative * std::max(std::fabs(a), std::fabs(b)) +
                                         (1 + match.atomic_adds) * kBf16Floor * scale;
      const double excess = a == b ? 0.0 : std::fabs(a - b) / allowance;
      if (!(excess <= worst)) {
        worst = excess;
        at = static_cast<int64_t>(i);
      }
    }
    INFO(what, " (", dtype_name(on_cpu.dtype), "): worst at ", at, ", CPU ", want[at], ", GPU ",
         got[at], ", ", worst, " allowances, scale ", scale);
    CHECK(worst <= 1.0);
  }
};

using TwinList = std::vector<std::unique_ptr<Twin>>;
using Op = std::function<void(Context&, const std::vector<Tensor>&)>;

void add(TwinList& ts, const Shape& shape, DType dtype, float lo, float hi) {
  ts.push_back(std::make_unique<Twin>(shape, dtype, lo, hi, ts.size()));
}

// Runs op on the CPU tensors and on the GPU tensors (from the same values), both with
// `numerics`, then compares every tensor (bf16 ones as `match` says, float32 ones within
// `tolerance`).
void run_both(const TwinList& ts, const Op& op, const char* what, Bf16Match match, double tolerance,
              const Numerics& numerics = kBf16) {
  Context cpu(Device::CPU, 2, 3, numerics), gpu(Device::CUDA, 2, 3, numerics);
  std::vector<Tensor> on_cpu, on_gpu;
  for (const auto& t : ts) {
    t->resync();
    on_cpu.push_back(t->on_cpu);
    on_gpu.push_back(t->on_gpu);
  }
  op(cpu, on_cpu);
  op(gpu, on_gpu);
  for (const auto& t : ts) t->expect_close(what, match, tolerance);
}

// int32 labels (i * 37) % 100 for `rows` samples, on both devices.
struct Labels {
  DeviceBuffer host, device;
  Tensor on_cpu, on_gpu;
  Labels(int64_t rows, int64_t classes)
      : host(Device::CPU, static_cast<size_t>(rows) * sizeof(int32_t)),
        device(Device::CUDA, host.bytes()),
        on_cpu(host.view(0, Shape{rows}, DType::I32)),
        on_gpu(device.view(0, Shape{rows}, DType::I32)) {
    for (int64_t i = 0; i < rows; ++i) on_cpu.i32()[i] = static_cast<int32_t>((i * 37) % classes);
    memory_copy(device.data(), Device::CUDA, host.data(), Device::CPU, host.bytes());
  }
};

}  // namespace

TEST_CASE("cuda bf16: elementwise ops and activation quantization equal the CPU, to the bit") {
  struct Case {
    const char* name;
    int inputs;  // followed by the output, prefilled so that accumulation is visible
    Op op;
  };
  using V = const std::vector<Tensor>&;
  std::vector<Case> cases = {
      {"relu_forward", 1, [](Context& c, V t) { ops::relu_forward(c, t[0], t[1]); }},
      {"add_forward", 2, [](Context& c, V t) { ops::add_forward(c, t[0], t[1], t[2]); }},
      {"add_relu_forward", 2, [](Context& c, V t) { ops::add_relu_forward(c, t[0], t[1], t[2]); }},
      {"dropout_forward", 1,
       [](Context& c, V t) { ops::dropout_forward(c, t[0], 0.3f, 9, 4, t[1]); }},
      {"quantize_activations", 1,
       [](Context& c, V t) { ops::quantize_activations(c, t[0], 0.1f, 15, t[1]); }}};
  for (ops::GradMode mode : kModes) {
    cases.push_back({"relu_backward", 2,
                     [=](Context& c, V t) { ops::relu_backward(c, t[0], t[1], t[2], mode); }});
    cases.push_back(
        {"grad_pass", 1, [=](Context& c, V t) { ops::grad_pass(c, t[0], t[1], mode); }});
    cases.push_back({"dropout_backward", 1, [=](Context& c, V t) {
                       ops::dropout_backward(c, t[0], 0.5f, 9, 4, t[1], mode);
                     }});
  }
  for (const Case& c : cases)
    for (int64_t n : kElementCounts) {
      CAPTURE(c.name);
      CAPTURE(n);
      TwinList t;
      for (int i = 0; i <= c.inputs; ++i) add(t, Shape{n}, BF16, -2.0f, 2.0f);
      run_both(t, c.op, c.name, kExact, 0.0);
    }
}

TEST_CASE("cuda bf16: batch norm, training and evaluation, forward and backward") {
  for (const Shape& x : batch_norm_shapes()) {
    CAPTURE(x.str());
    const Shape c{x[1]};
    TwinList t;  // x, gamma, beta, running mean and var, y, saved mean and invstd, dy, dx,
                 // dgamma, dbeta
    for (const auto& [shape, dtype, lo, hi] : {std::tuple{x, BF16, -2.0f, 3.0f},
                                               {c, F32, 0.5f, 1.5f},
                                               {c, F32, -0.5f, 0.5f},
                                               {c, F32, -0.5f, 0.5f},
                                               {c, F32, 0.5f, 1.5f},
                                               {x, BF16, -1.0f, 1.0f},
                                               {c, F32, 0.0f, 0.0f},
                                               {c, F32, 0.0f, 0.0f},
                                               {x, BF16, -1.0f, 1.0f},
                                               {x, BF16, -1.0f, 1.0f},
                                               {c, F32, 0.0f, 0.0f},
                                               {c, F32, 0.0f, 0.0f}})
      add(t, shape, dtype, lo, hi);
    // The ReLU's mask: none, read from its output, recomputed from x.
    for (int relu : {0, 1, 2})
      for (ops::GradMode mode : kModes) {
        CAPTURE(relu);
        CAPTURE(int(mode));
        run_both(
            t,
            [=](Context& ctx, const std::vector<Tensor>& v) {
              ctx.reserve_workspace(ops::batch_norm_workspace_floats(ctx, v[0].shape));
              const ops::BatchNormParams p{.relu = relu > 0};
              ops::batch_norm_forward_train(ctx, v[0], v[1], v[2], v[3], v[4], p, v[5], v[6], v[7]);
              ops::batch_norm_backward(
                  ctx, v[0], v[8], v[1], v[6], v[7], v[9], mode, v[10], v[11],
                  {.output = relu == 1 ? v[5] : Tensor{}, .beta = relu == 2 ? v[2] : Tensor{}});
              ops::batch_norm_forward_eval(ctx, v[0], v[1], v[2], v[3], v[4], p, v[5]);
            },
            "batch_norm", kAllowance, kParamGradients);
      }
  }
}

TEST_CASE(
    "cuda bf16: batch norm + ReLU backward recomputes the ReLU's mask as the forward took it") {
  // The shapes of the float32 case: one block per channel, 4-wide and scalar, and the split
  // passes, 4-wide and scalar. A channel's outputs on 0 all take one side, so a shape of 3 to 8
  // channels may see one side only; together the shapes must see both.
  Context ctx(Device::CUDA, 2, 3, kBf16);
  check_relu_mask_on_zero(
      ctx, {Shape{128, 8, 8, 8}, Shape{3, 5, 7, 15}, Shape{32, 4, 32, 32}, Shape{64, 3, 15, 19}},
      BothSidesIn::AllShapes);
}

TEST_CASE("cuda bf16: synchronised batch norm's stages") {
  for (const Shape& x : batch_norm_shapes()) {
    CAPTURE(x.str());
    const Shape c{x[1]};
    TwinList t;  // x, gamma, beta, running mean (the shift) and var, mean, invstd, y, dy, dgamma,
                 // dbeta, dx
    for (const auto& [shape, dtype, lo, hi] : {std::tuple{x, BF16, 1.0f, 3.0f},
                                               {c, F32, 0.5f, 1.5f},
                                               {c, F32, -0.5f, 0.5f},
                                               {c, F32, 1.5f, 2.5f},
                                               {c, F32, 0.5f, 1.5f},
                                               {c, F32, 0.0f, 0.0f},
                                               {c, F32, 0.0f, 0.0f},
                                               {x, BF16, -1.0f, 1.0f},
                                               {x, BF16, -1.0f, 1.0f},
                                               {c, F32, 0.0f, 0.0f},
                                               {c, F32, 0.0f, 0.0f},
                                               {x, BF16, -1.0f, 1.0f}})
      add(t, shape, dtype, lo, hi);
    for (ops::GradMode mode : kModes) {
      CAPTURE(int(mode));
      run_both(
          t,
          [&](Context& ctx, const std::vector<Tensor>& v) {
            run_batch_norm_stages(ctx, v, c[0], mode);
          },
          "batch_norm stages", kAllowance, kParamGradients);
    }
  }
}

TEST_CASE("cuda bf16: average and max pooling, forward and backward, overlapping windows") {
  for (const PoolShape& c : pool_shapes()) {
    CAPTURE(c.x.str());
    const ops::Pool2dGeometry g = c.g;
    const Shape y = ops::pool2d_output_shape(c.x, g);
    TwinList t;  // x, y, dy, dx
    for (const Shape& s : {c.x, y, y, c.x}) add(t, s, BF16, -1.0f, 1.0f);
    for (ops::GradMode mode : kModes) {
      CAPTURE(int(mode));
      run_both(
          t,
          [=](Context& ctx, const std::vector<Tensor>& v) {
            ops::avg_pool_forward(ctx, v[0], g, v[1]);
            ops::avg_pool_backward(ctx, v[2], g, v[3], mode);
          },
          "average pooling", kAllowance, 0.0);
      run_both(
          t,
          [=](Context& ctx, const std::vector<Tensor>& v) {
            ops::max_pool_forward(ctx, v[0], g, v[1]);
            ops::max_pool_backward(ctx, v[0], v[2], g, v[3], mode);
          },
          "max pooling", kExact, 0.0);
    }
  }
}

TEST_CASE("cuda bf16: softmax cross-entropy, top-k, metrics and the min/max reduction") {
  for (const auto& [rows, classes] : loss_shapes()) {
    CAPTURE(rows);
    CAPTURE(classes);
    const Labels labels(rows, classes);
    TwinList t;  // logits, loss, dlogits, min and max
    for (const auto& [shape, dtype] : {std::tuple{Shape{rows, classes}, BF16},
                                       {Shape{1}, F32},
                                       {Shape{rows, classes}, BF16},
                                       {Shape{2}, F32}})
      add(t, shape, dtype, -4.0f, 4.0f);
    int64_t correct[2][3] = {};
    double totals[2][ops::kMetricFields] = {};
    run_both(
        t,
        [&](Context& ctx, const std::vector<Tensor>& v) {
          const int on_gpu = ctx.device() == Device::CUDA;
          const Tensor& y = on_gpu ? labels.on_gpu : labels.on_cpu;
          ops::softmax_cross_entropy(ctx, v[0], y, v[1], v[2]);
          ops::tensor_min_max(ctx, v[0], v[3]);
          for (int k : {1, 5, 100})
            correct[on_gpu][k == 1 ? 0 : k == 5 ? 1 : 2] = ops::topk_correct(ctx, v[0], y, k);
          DeviceBuffer sums(ctx.device(), sizeof totals[0]);
          ops::accumulate_metrics(ctx, v[0], y, v[1], sums.f64(0, Shape{ops::kMetricFields}));
          memory_copy(totals[on_gpu], Device::CPU, sums.data(), ctx.device(), sizeof totals[0]);
        },
        "loss", kAllowance, kStatistics);
    for (int k = 0; k < 3; ++k) CHECK(correct[0][k] == correct[1][k]);
    CHECK(totals[1][ops::kMetricLossSum] ==
          doctest::Approx(totals[0][ops::kMetricLossSum]).epsilon(kStatistics));
    CHECK(totals[1][ops::kMetricCorrect] == totals[0][ops::kMetricCorrect]);
    CHECK(totals[1][ops::kMetricCorrectTop5] == totals[0][ops::kMetricCorrectTop5]);
    CHECK(totals[1][ops::kMetricSamples] == totals[0][ops::kMetricSamples]);
  }
}

TEST_CASE("cuda bf16: convolution through cuDNN") {
  for (const ConvShape& c : conv_shapes()) {
    CAPTURE(c.x.str());
    const Shape y = ops::conv2d_output_shape(c.x, c.w, c.g);
    TwinList t;  // x, w, y, dy, dx, dw
    for (const auto& [shape, dtype] :
         {std::tuple{c.x, BF16}, {c.w, F32}, {y, BF16}, {y, BF16}, {c.x, BF16}, {c.w, F32}})
      add(t, shape, dtype, -1.0f, 1.0f);
    // Deterministic algorithms, psgd's direct and tensor-core kernels (where they serve the shape)
    // and cuDNN's float32 kernels on widened copies round each result once; the fastest bf16
    // ones may add one partial sum per filter tap into the input's gradient.
    const Bf16Match atomic{.atomic_adds = static_cast<int>(c.w[2] * c.w[3])};
    for (const auto& [numerics, match] : {std::pair{kBf16Deterministic, kAllowance},
                                          {kBf16, atomic},
                                          {kBf16Direct, kAllowance},
                                          {kBf16TensorCore, kAllowance},
                                          {kBf16Widened, kAllowance}})
      for (ops::GradMode mode : kModes) {
        CAPTURE(numerics.deterministic);
        CAPTURE(int(mode));
        run_both(
            t,
            [&](Context& ctx, const std::vector<Tensor>& v) {
              ctx.reserve_workspace(ops::conv2d_workspace_floats(ctx, c.x, c.w, c.g));
              ops::conv2d_forward(ctx, v[0], v[1], c.g, v[2]);
              ops::conv2d_backward(ctx, v[0], v[1], v[3], c.g, v[4], mode, v[5]);
            },
            "conv2d", match, kFilterGradients, numerics);
      }
  }
}

TEST_CASE("cuda bf16: linear layers through cuBLAS") {
  for (const auto& [n, in, out] :
       {std::tuple<int64_t, int64_t, int64_t>{1, 64, 10}, {7, 13, 5}, {128, 512, 100}}) {
    CAPTURE(n);
    TwinList t;  // x, w, b, y, dy, dx, dw, db
    for (const auto& [shape, dtype] : {std::tuple{Shape{n, in}, BF16},
                                       {Shape{out, in}, F32},
                                       {Shape{out}, F32},
                                       {Shape{n, out}, BF16},
                                       {Shape{n, out}, BF16},
                                       {Shape{n, in}, BF16},
                                       {Shape{out, in}, F32},
                                       {Shape{out}, F32}})
      add(t, shape, dtype, -1.0f, 1.0f);
    for (ops::GradMode mode : kModes) {
      CAPTURE(int(mode));
      run_both(
          t,
          [=](Context& ctx, const std::vector<Tensor>& v) {
            ctx.reserve_workspace(ops::linear_workspace_floats(ctx, v[0].shape, v[1].shape));
            ops::linear_forward(ctx, v[0], v[1], v[2], v[3]);
            ops::linear_backward(ctx, v[0], v[1], v[4], v[5], mode, v[6], v[7]);
          },
          "linear", kAllowance, kParamGradients);
    }
  }
}
