// Training and evaluation on the GPU: the GPU loader against the CPU loader, a whole-network
// PSGD step against the CPU, the captured (CUDA graph) training step and evaluation batches
// against the same work run op by op, and deterministic runs. Skipped where no GPU is visible.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "data/gpu_loader.h"
#include "engine/evaluator.h"
#include "engine/optim.h"
#include "engine/train_step.h"
#include "engine/weight_quant.h"
#include "kernels/ops.h"
#include "nets/nets.h"
#include "nets/quant_config.h"
#include "tests/support/difference.h"
#include "tests/support/host_tensor.h"
#include "tests/support/pattern_dataset.h"

using namespace psgd;
using namespace psgd::test;

namespace {

constexpr int64_t kBatch = 32;

std::vector<float> to_host(const Tensor& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  memory_copy(out.data(), Device::CPU, t.data, t.device, t.bytes());
  return out;
}

// max|a - b| / max|a|
double relative_error(const std::vector<float>& a, const std::vector<float>& b) {
  double worst = 0, scale = 1e-30;
  for (size_t i = 0; i < a.size(); ++i) {
    worst = worse_difference(worst, a[i], b[i]);
    scale = std::max(scale, std::fabs(double(a[i])));
  }
  return worst / scale;
}

// |a - b| / |a| over whole vectors.
double l2_relative_error(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0, norm = 1e-300;
  for (size_t i = 0; i < a.size(); ++i) {
    diff += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    norm += double(a[i]) * a[i];
  }
  return std::sqrt(diff / norm);
}

// A ResNet-20 with W4 PSGD, its optimizer, and a fixed batch, on one device.
struct Run {
  Context ctx;
  std::unique_ptr<Net> net;
  Optimizer optimizer;
  DeviceBuffer images, labels;
  Run(Device device, Numerics math, OptimizerKind kind = OptimizerKind::Sgd)
      : ctx(device, 2, 7, math),
        net(make_psgd_net(device)),
        optimizer(net->params(),
                  {.kind = kind, .momentum = 0.9f, .weight_decay = 1e-4f, .lambda_s = 150.0f}),
        images(device, kBatch * 3 * 32 * 32 * sizeof(float)),
        labels(device, kBatch * sizeof(int32_t)) {
    HostTensor x(Shape{kBatch, 3, 32, 32});
    fill_uniform(x.t(), -2.0f, 2.0f, 5, 0);
    memory_copy(images.data(), device, x.data(), Device::CPU, x.t().bytes());
    std::vector<int32_t> y(kBatch);
    for (int64_t i = 0; i < kBatch; ++i) y[i] = static_cast<int32_t>(i * 7 % 10);
    memory_copy(labels.data(), device, y.data(), Device::CPU, y.size() * sizeof(int32_t));
  }
  static std::unique_ptr<Net> make_psgd_net(Device device) {
    auto net = make_net("resnet20", 10, device, 11);
    assign_quantizers(net->params(), {.w_bits = 4, .first_last = true, .psg = true});
    return net;
  }
  Tensor x() const { return images.f32(0, Shape{kBatch, 3, 32, 32}); }
  Tensor y() const {
    return Tensor(reinterpret_cast<int32_t*>(labels.data()), Shape{kBatch}, labels.device());
  }
  std::vector<float> weights() const { return to_host(net->params().weights()); }
};

// The device memory psgd holds now (its DeviceBuffers), which becomes the peak's new base.
size_t held_now(Device device) {
  memory_reset_peak(device);
  return memory_peak(device);
}

}  // namespace

TEST_CASE("cuda training: one PSGD step of ResNet-20 matches the CPU") {
  Run cpu(Device::CPU, {}), gpu(Device::CUDA, {.tf32 = false});
  for (Run* r : {&cpu, &gpu}) {
    TrainStep step(r->ctx, *r->net, r->optimizer, single_rank());
    step.run(r->x(), r->y(), 0.01f);
  }
  const double logits = relative_error(to_host(cpu.net->logits()), to_host(gpu.net->logits()));
  const double weights = relative_error(cpu.weights(), gpu.weights());
  INFO("logits ", logits, ", weights ", weights);
  CHECK(logits <= 1e-4);
  CHECK(weights <= 1e-5);
}

// bf16 on both: the same roundings, but float32 sums in another order (cuDNN's), so a rounding
// flips here and there, and BN's backward magnifies such flips in the gradients deeper down
// (tests/unit/test_nets.cpp): perturbing the CPU's own bf16 step by relative 1e-7..1e-5 moves
// its whole gradient by 0.13-0.29 (L2) and the classifier's by 0.003-0.006. The bounds are those
// of bf16 against float32; the numbers are printed for the record either way.
TEST_CASE("cuda training: one bf16 PSGD step of ResNet-20 matches the CPU's bf16 step") {
  Run cpu(Device::CPU, {.bf16 = true}), gpu(Device::CUDA, {.bf16 = true});
  for (Run* r : {&cpu, &gpu}) {
    TrainStep step(r->ctx, *r->net, r->optimizer, single_rank());
    step.run(r->x(), r->y(), 0.01f);
  }
  const auto widened_logits = [](Run& r) {
    const Shape shape = r.net->logits().shape;
    DeviceBuffer f32(r.ctx.device(), static_cast<size_t>(shape.numel()) * sizeof(float));
    const Tensor device_f32 = f32.f32(0, shape);
    ops::cast(r.ctx, r.net->logits(), device_f32);
    return to_host(device_f32);
  };
  const auto fc_gradient = [](Run& r) {
    const ParamStore& p = r.net->params();
    return to_host(p.grad(p.find("fc.weight")));
  };
  const double logits = relative_error(widened_logits(cpu), widened_logits(gpu));
  const double gradient =
      l2_relative_error(to_host(cpu.net->params().grads()), to_host(gpu.net->params().grads()));
  const double fc = l2_relative_error(fc_gradient(cpu), fc_gradient(gpu));
  MESSAGE("bf16 step, GPU against CPU: logits ", logits, " (max), gradient ", gradient,
          " (L2), classifier gradient ", fc, " (L2)");
  CHECK(logits <= 0.03);
  CHECK(fc <= 0.02);
  CHECK(gradient <= 0.45);
}

TEST_CASE("cuda training: the captured step replays exactly what the op-by-op step computes") {
  // Adam's bias corrections advance inside the graph, with no upload per step; the rate changes
  // every step, as in a warm-up, and the replays read it where prepare() wrote it.
  for (const auto& [bf16, kind] : {std::pair{false, OptimizerKind::Sgd},
                                   {true, OptimizerKind::Sgd},
                                   {false, OptimizerKind::Adam}}) {
    CAPTURE(bf16);
    CAPTURE(int(kind));
    const Numerics math{.tf32 = true, .deterministic = true, .bf16 = bf16};
    Run captured(Device::CUDA, math, kind), eager(Device::CUDA, math, kind);
    const float peak = kind == OptimizerKind::Adam ? 1e-3f : 0.05f;
    TrainStep step(captured.ctx, *captured.net, captured.optimizer, single_rank());
    for (int i = 0; i < 5; ++i) {
      const float lr = peak * static_cast<float>(i + 1) / 5;
      step.run(captured.x(), captured.y(), lr);
      eager.net->forward(eager.ctx, eager.x(), Mode::Train);
      eager.net->loss(eager.ctx, eager.y());
      eager.net->backward(eager.ctx);
      eager.optimizer.step(eager.ctx, lr);
    }
    CHECK(step.replays() == 3);  // step 1 runs op by op, step 2 is captured, 3 to 5 replay
    CHECK(captured.weights() == eager.weights());
    CHECK(to_host(captured.net->params().buffers()) == to_host(eager.net->params().buffers()));
  }
}

TEST_CASE("cuda training: a context holds no device memory, and later steps allocate none") {
  // cuBLAS works in the context's workspace, planned with the network: a buffer of its own would
  // add to every peak.
  const size_t start = held_now(Device::CUDA);
  {
    Context ctx(Device::CUDA, 2, 7, {.tf32 = true});
    CHECK(held_now(Device::CUDA) == start);
  }
  Run run(Device::CUDA, {.tf32 = true});
  TrainStep step(run.ctx, *run.net, run.optimizer, single_rank());
  step.run(run.x(), run.y(), 0.05f);  // plans the batch and runs op by op
  const size_t planned = held_now(Device::CUDA);
  for (int i = 0; i < 3; ++i) step.run(run.x(), run.y(), 0.05f);  // captured, then replayed
  CHECK(step.replays() == 2);
  CHECK(memory_peak(Device::CUDA) == planned);
}

TEST_CASE("cuda training: float-weight training (no quantizers) is captured too") {
  Context ctx(Device::CUDA, 2, 7, {.tf32 = true});
  auto net = make_net("resnet20", 10, Device::CUDA, 11);
  Optimizer optimizer(net->params(), {.momentum = 0.9f, .weight_decay = 1e-4f});
  Run data(Device::CUDA, {});  // for its batch
  TrainStep step(ctx, *net, optimizer, single_rank());
  for (int i = 0; i < 4; ++i) step.run(data.x(), data.y(), 0.05f);
  CHECK(step.replays() == 2);
}

TEST_CASE("cuda training: --deterministic runs give identical weights") {
  const Numerics math{.tf32 = true, .deterministic = true};
  std::vector<float> first;
  for (int run = 0; run < 2; ++run) {
    Run r(Device::CUDA, math);
    TrainStep step(r.ctx, *r.net, r.optimizer, single_rank());
    for (int i = 0; i < 4; ++i) step.run(r.x(), r.y(), 0.05f);
    if (run == 0)
      first = r.weights();
    else
      CHECK(r.weights() == first);
  }
}

TEST_CASE("cuda training: the GPU loader gives the CPU loader's batches, byte for byte") {
  const int64_t n = 203;  // a partial last batch
  const data::Dataset d = pattern_dataset(n, 10);
  std::vector<int64_t> subset;
  for (int64_t i = 0; i < n; i += 1 + i % 3) subset.push_back(i);
  const data::LoaderConfig config{
      .batch_size = 32, .shuffle = true, .augment = true, .seed = 9, .rank = 1, .world = 2};
  data::Loader cpu(d, config, subset);
  data::GpuLoader gpu(d, config, subset);
  for (int64_t epoch : {1, 2}) {
    cpu.start_epoch(epoch);
    gpu.start_epoch(epoch);
    Tensor ci, cl, gi, gl;
    int64_t batches = 0;
    while (cpu.next(ci, cl)) {
      REQUIRE(gpu.next(gi, gl));
      REQUIRE(gi.shape == ci.shape);
      CHECK(to_host(gi) == std::vector<float>(ci.f32(), ci.f32() + ci.numel()));
      std::vector<int32_t> labels(static_cast<size_t>(gl.numel()));
      memory_copy(labels.data(), Device::CPU, gl.data, gl.device, gl.bytes());
      CHECK(labels == std::vector<int32_t>(cl.i32(), cl.i32() + cl.numel()));
      ++batches;
    }
    CHECK_FALSE(gpu.next(gi, gl));
    CHECK(batches == cpu.batches_per_epoch());
  }
}

TEST_CASE(
    "cuda training: layers computing their ReLUs (BN + ReLU, add + ReLU, BN + add + ReLU) "
    "change no bit") {
  const Numerics math{.tf32 = false, .deterministic = true};
  std::vector<float> weights[2];
  for (const bool fused : {false, true}) {
    Run r(Device::CUDA, math);
    r.net->set_fusion(fused ? Net::Fusion::Preferred : Net::Fusion::None);
    TrainStep step(r.ctx, *r.net, r.optimizer, single_rank());
    for (int i = 0; i < 3; ++i) step.run(r.x(), r.y(), 0.05f);
    weights[fused] = r.weights();
  }
  CHECK(weights[0] == weights[1]);
}

TEST_CASE("cuda training: VGG16-bn's steps, dropout included, are captured and replay exactly") {
  const Numerics math{.tf32 = true, .deterministic = true};
  std::vector<float> weights[2];
  for (const bool capture : {false, true}) {
    Context ctx(Device::CUDA, 2, 7, math);
    auto net = make_net("vgg16_bn", 10, Device::CUDA, 11);
    Optimizer optimizer(net->params(), {.momentum = 0.9f, .weight_decay = 1e-4f});
    Run data(Device::CUDA, {});
    TrainStep step(ctx, *net, optimizer, single_rank());
    for (int i = 0; i < 4; ++i) {
      if (capture) {
        step.run(data.x(), data.y(), 0.01f);
      } else {
        net->forward(ctx, data.x(), Mode::Train);
        net->loss(ctx, data.y());
        net->backward(ctx);
        optimizer.step(ctx, 0.01f);
      }
    }
    if (capture) CHECK(step.replays() == 2);
    weights[capture] = to_host(net->params().weights());
  }
  CHECK(weights[0] == weights[1]);
}

TEST_CASE("cuda evaluation: captured batches give the op-by-op sums, FP and LP, over two loaders") {
  // VGG16-bn's dropout copies its input in evaluation: a copy the graph must record too.
  for (const char* arch : {"resnet20", "vgg16_bn"}) {
    CAPTURE(arch);
    Context ctx(Device::CUDA, 2, 7, {.tf32 = true, .deterministic = true});
    auto net = make_net(arch, 10, Device::CUDA, 11);
    assign_quantizers(net->params(), {.w_bits = 4, .first_last = true, .psg = true});
    const data::Dataset d = pattern_dataset(203, 10);  // 6 batches of 32 and one of 11
    const data::LoaderConfig config{.batch_size = 32, .shuffle = false, .augment = false};
    data::GpuLoader first(d, config), second(d, config);  // the same batches in other memory
    // What the evaluator runs for each batch, op by op.
    const auto op_by_op = [&](BatchSource& source) {
      MetricSums sums(Device::CUDA);
      source.start_epoch(0);
      Tensor images, labels;
      while (source.next(images, labels)) {
        const Tensor& logits = net->forward(ctx, images, Mode::Eval);
        ops::accumulate_metrics(ctx, logits, labels, net->loss(ctx, labels), sums.sums());
      }
      const auto t = sums.read();
      const double n = t[ops::kMetricSamples];
      return EvalResult{t[ops::kMetricLossSum] / n, t[ops::kMetricCorrect] / n,
                        t[ops::kMetricCorrectTop5] / n, static_cast<int64_t>(n)};
    };
    const auto check_same = [](const EvalResult& a, const EvalResult& b) {
      CHECK(a.samples == 203);
      CHECK(a.samples == b.samples);
      CHECK(a.loss == b.loss);
      CHECK(a.top1 == b.top1);
      CHECK(a.top5 == b.top5);
    };
    // Both sizes planned first: cuDNN may want more workspace for batch 11's shapes, and growing
    // it later would send batch 32 to capture again and shift the counts below.
    net->plan(ctx, 11);
    net->plan(ctx, 32);
    Evaluator evaluator(ctx, *net);
    const EvalResult fp = evaluator.evaluate(first);  // 32: op by op, captured, 4 replays; 11: op
    check_same(fp, op_by_op(first));
    CHECK(evaluator.replays() == 4);
    const EvalResult lp = evaluator.evaluate_low_precision(first);  // 6 replays; 11: captured
    CHECK(evaluator.replays() == 10);
    {
      WeightsSnapshot keep(net->params());
      quantize_in_place(ctx, net->params());
      check_same(lp, op_by_op(first));
    }
    CHECK(lp.loss != fp.loss);
    // Other images' memory: each size captured again, then replayed.
    check_same(evaluator.evaluate(second), fp);
    CHECK(evaluator.replays() == 15);
    check_same(evaluator.evaluate(first), fp);
    CHECK(evaluator.replays() == 20);
  }
}
