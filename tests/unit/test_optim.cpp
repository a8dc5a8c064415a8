// The fused PSGD optimizer step against plain per-tensor loops, and the learning-rate schedules.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <numbers>

#include "engine/optim.h"
#include "engine/schedule.h"
#include "kernels/quant_math.h"
#include "tests/support/difference.h"
#include "tests/support/host_tensor.h"

using namespace psgd;
using namespace psgd::test;

namespace {

// A store with a grid-quantized conv weight, a zero-target linear weight and a float BN weight.
struct Toy {
  ParamStore params;
  int conv, fc, bn;

  explicit Toy(QuantTarget fc_target = QuantTarget::Zero) {
    conv = params.add("conv.weight", Shape{3, 2, 3, 3}, ParamRole::ConvWeight);
    fc = params.add("fc.weight", Shape{5, 7}, ParamRole::LinearWeight);
    bn = params.add("bn.weight", Shape{6}, ParamRole::BnWeight);
    params.allocate(Device::CPU);
    params.set_quant(conv, {4, true, QuantTarget::Grid});
    params.set_quant(fc, {3, true, fc_target});
    fill_uniform(params.weights(), -0.5f, 0.5f, 1, 0);
  }
  void fill_grads(uint64_t step) { fill_uniform(params.grads(), -1.0f, 1.0f, 2, step); }
};

// The reference, written plainly per tensor in double: ranges, Q(w), the PSG scale, weight
// decay, then PyTorch's SGD or Adam.
struct ReferenceOptimizer {
  OptimizerConfig c;
  std::vector<double> buf, m, v;
  std::vector<double> x_min, x_max;
  int64_t t = 0;

  void step(ParamStore& p, std::vector<double>& w, const std::vector<float>& g, double lr) {
    ++t;
    buf.resize(w.size());
    m.resize(w.size());
    v.resize(w.size());
    std::vector<double> d(w.size());
    int quantized = 0;
    for (const ParamEntry& e : p.entries()) {
      if (storage_of(e.role) != ParamStorage::Trainable) continue;
      const int64_t n = e.shape.numel();
      double delta = 0, levels = 0;
      if (e.quant.quantized()) {
        double lo = 0, hi = 0;
        for (int64_t i = e.offset; i < e.offset + n; ++i) {
          lo = std::min(lo, w[i]);
          hi = std::max(hi, w[i]);
        }
        x_min.resize(quantized + 1);
        x_max.resize(quantized + 1);
        x_min[quantized] = t == 1 ? lo : 0.1 * lo + 0.9 * x_min[quantized];
        x_max[quantized] = t == 1 ? hi : 0.1 * hi + 0.9 * x_max[quantized];
        levels = (1 << (e.quant.bits - 1)) - 1;
        delta = std::max(std::fabs(x_min[quantized]), x_max[quantized]) / levels;
        ++quantized;
      }
      for (int64_t i = e.offset; i < e.offset + n; ++i) {
        double scale = 1;
        if (e.quant.quantized() && c.lambda_s > 0) {
          const double q = delta * std::nearbyint(std::clamp(w[i] / delta, -levels, levels));
          scale = c.lambda_s * std::fabs(e.quant.target == QuantTarget::Grid ? w[i] - q : w[i]);
        }
        d[i] = g[i] * scale + c.weight_decay * w[i];
      }
    }
    for (size_t i = 0; i < w.size(); ++i) {
      if (c.kind == OptimizerKind::Sgd) {
        buf[i] = t == 1 ? d[i] : c.momentum * buf[i] + d[i];
        w[i] -= lr * buf[i];
      } else {
        m[i] = c.beta1 * m[i] + (1 - c.beta1) * d[i];
        v[i] = c.beta2 * v[i] + (1 - c.beta2) * d[i] * d[i];
        const double bc1 = 1 - std::pow(c.beta1, t), bc2 = 1 - std::pow(c.beta2, t);
        w[i] -= lr / bc1 * m[i] / (std::sqrt(v[i]) / std::sqrt(bc2) + c.eps);
      }
    }
  }
};

void compare_with_reference(OptimizerConfig config, float lr) {
  Toy toy;
  Optimizer opt(toy.params, config);
  ReferenceOptimizer ref{config};
  const Tensor w = toy.params.weights();
  std::vector<double> expected(w.f32(), w.f32() + w.numel());
  Context ctx(Device::CPU, 2);
  for (int step = 0; step < 3; ++step) {
    toy.fill_grads(step);
    const Tensor g = toy.params.grads();
    ref.step(toy.params, expected, {g.f32(), g.f32() + g.numel()}, lr);
    opt.step(ctx, lr);
  }
  double worst = 0, scale = 0;
  for (int64_t i = 0; i < w.numel(); ++i) {
    worst = worse_difference(worst, w.f32()[i], expected[i]);
    scale = std::max(scale, std::fabs(expected[i]));
  }
  CHECK(worst / scale < 1e-5);
  CHECK(opt.steps() == 3);
}

}  // namespace

TEST_CASE("fused SGD step with PSG (grid and zero targets) against a plain loop") {
  compare_with_reference(
      {.kind = OptimizerKind::Sgd, .momentum = 0.9f, .weight_decay = 1e-4f, .lambda_s = 150.0f},
      0.01f);
}

TEST_CASE("fused Adam step with PSG against a plain loop") {
  compare_with_reference({.kind = OptimizerKind::Adam, .weight_decay = 1e-4f, .lambda_s = 150.0f},
                         1e-3f);
}

TEST_CASE("Adam's moments take beta and 1 - beta each rounded from double, as PyTorch does") {
  // PyTorch: m.mul_(0.9).add_(d, alpha=1 - 0.9) and v.mul_(0.999).addcmul_(d, d, value=1 - 0.999)
  // with Python's doubles rounded to float32 per factor; 1 - 0.999f is 1.3e-5 off 0.001f.
  Toy toy;
  Optimizer opt(toy.params, {.kind = OptimizerKind::Adam, .weight_decay = 0.0f});
  toy.fill_grads(0);
  Context ctx(Device::CPU, 1);
  opt.step(ctx, 1e-3f);
  const float* g = toy.params.grads().f32();
  const float* m = opt.state(0).f32();
  const float* v = opt.state(1).f32();
  const float one_minus_beta1 = static_cast<float>(1.0 - 0.9),
              one_minus_beta2 = static_cast<float>(1.0 - 0.999);
  for (int64_t i = 0; i < toy.params.grads().numel(); ++i) {
    CHECK(m[i] == one_minus_beta1 * g[i]);
    CHECK(v[i] == one_minus_beta2 * g[i] * g[i]);
  }
}

TEST_CASE("Adam resumed from its state and step count continues bit for bit") {
  // The bias corrections count steps on the device; a resumed optimizer must recount from the
  // step it was given, and a new learning rate must reach the device too.
  const OptimizerConfig config{
      .kind = OptimizerKind::Adam, .weight_decay = 1e-4f, .lambda_s = 150.0f};
  const auto copy = [](const Tensor& from, const Tensor& to) {
    std::copy(from.f32(), from.f32() + from.numel(), to.f32());
  };
  Context ctx(Device::CPU, 2);
  Toy whole, resumed;
  Optimizer a(whole.params, config), b(resumed.params, config);
  resumed.fill_grads(9);
  b.step(ctx, 1e-3f);  // b has counted a step of its own before it is given a's state
  const float lr[5] = {1e-3f, 1e-3f, 1e-3f, 1e-3f, 1e-4f};
  for (int step = 0; step < 5; ++step) {
    whole.fill_grads(step);
    a.step(ctx, lr[step]);
    if (step != 2) continue;
    copy(whole.params.weights(), resumed.params.weights());
    for (int i = 0; i < a.state_count(); ++i) copy(a.state(i), b.state(i));
    b.ranges().restore(a.ranges().x_min(), a.ranges().x_max());
    b.set_steps(a.steps());
  }
  for (int step = 3; step < 5; ++step) {
    resumed.fill_grads(step);
    b.step(ctx, lr[step]);
  }
  const Tensor wa = whole.params.weights(), wb = resumed.params.weights();
  CHECK(std::equal(wa.f32(), wa.f32() + wa.numel(), wb.f32()));
  CHECK(b.steps() == 5);
}

TEST_CASE("lambda_s = 0 is plain SGD, bit for bit") {
  Toy quantized;
  Toy plain;  // the same values, every tensor float
  for (int id : {plain.conv, plain.fc}) plain.params.set_quant(id, {});
  Optimizer a(quantized.params, {.momentum = 0.9f, .weight_decay = 5e-4f, .lambda_s = 0.0f});
  Optimizer b(plain.params, {.momentum = 0.9f, .weight_decay = 5e-4f, .lambda_s = 0.0f});
  Context ctx(Device::CPU, 2);
  const Tensor wa = quantized.params.weights(), wb = plain.params.weights();
  std::vector<float> w(wb.f32(), wb.f32() + wb.numel()), buf(w.size());
  for (int step = 0; step < 3; ++step) {
    quantized.fill_grads(step);
    plain.fill_grads(step);
    a.step(ctx, 0.1f);
    b.step(ctx, 0.1f);
    const float* g = plain.params.grads().f32();
    for (size_t i = 0; i < w.size(); ++i) {  // torch.optim.SGD, written out in float
      const float d = g[i] + 5e-4f * w[i];
      buf[i] = step == 0 ? d : 0.9f * buf[i] + d;
      w[i] -= 0.1f * buf[i];
    }
  }
  for (int64_t i = 0; i < wa.numel(); ++i) {
    REQUIRE(wa.f32()[i] == wb.f32()[i]);
    REQUIRE(wb.f32()[i] == w[i]);
  }
}

TEST_CASE("PSG scale: zero where w sits on the grid, lambda * |w| toward zero") {
  ParamStore p;
  const int id = p.add("conv.weight", Shape{3}, ParamRole::ConvWeight);
  p.allocate(Device::CPU);
  p.set_quant(id, {2, true, QuantTarget::Grid});  // grid {-m, 0, m}
  const float w0[] = {1.0f, 0.25f, -0.5f};
  for (int i = 0; i < 3; ++i) {
    p.value(id).f32()[i] = w0[i];
    p.grads().f32()[i] = 1.0f;
  }
  Optimizer opt(p, {.momentum = 0.0f, .weight_decay = 0.0f, .lambda_s = 2.0f});
  Context ctx(Device::CPU, 1);
  opt.step(ctx, 1.0f);
  const float* w = p.value(id).f32();
  CHECK(w[0] == 1.0f);               // on the grid: no gradient
  CHECK(w[1] == 0.25f - 2 * 0.25f);  // Q = 0: scale 2 * 0.25
  CHECK(w[2] == -0.5f - 2 * 0.5f);   // tie at 0.5 rounds to 0: scale 2 * 0.5
}

TEST_CASE("learning-rate schedules: the reference's milestones, cosine, warm-up") {
  LrSchedule multi{.base_lr = 0.01, .milestones = {123}, .gamma = 0.1};
  CHECK(multi.lr(83) == 0.01f);
  CHECK(multi.lr(122, 0.99) == 0.01f);
  CHECK(multi.lr(123) == 0.001f);
  // PyTorch's rates to the bit: Python's 0.1 * 0.1, rounded once to float32 (float inputs gave
  // 0.010000001).
  LrSchedule steps{.base_lr = 0.1, .milestones = {82, 123}, .gamma = 0.1};
  CHECK(steps.lr(100) == static_cast<float>(0.1 * 0.1));
  CHECK(steps.lr(100) == 0.01f);
  CHECK(steps.lr(150) == static_cast<float>(0.1 * 0.1 * 0.1));
  LrSchedule cosine{
      .kind = LrSchedule::Kind::Cosine, .base_lr = 0.2, .first_epoch = 1, .last_epoch = 10};
  CHECK(cosine.lr(1) == 0.2f);
  CHECK(cosine.lr(1, 0.5) == 0.2f);  // once per epoch, as CosineAnnealingLR(T_max=10) steps
  CHECK(cosine.lr(6) == doctest::Approx(0.1f));
  CHECK(cosine.lr(10) == doctest::Approx(0.1 * (1.0 + std::cos(0.9 * std::numbers::pi))));
  // The warm-up ramps every step: the first epoch's first step trains, its last is at half.
  LrSchedule warm{.base_lr = 0.1, .first_epoch = 1, .last_epoch = 5, .warmup_epochs = 2};
  CHECK(warm.lr(1, 1.0 / 100) == doctest::Approx(0.0005f));
  CHECK(warm.lr(1, 0.5) == doctest::Approx(0.025f));
  CHECK(warm.lr(1) == doctest::Approx(0.05f));
  CHECK(warm.lr(2, 0.5) == doctest::Approx(0.075f));
  CHECK(warm.lr(2) == 0.1f);
  CHECK(warm.lr(3, 0.01) == 0.1f);
  LrSchedule bad{.base_lr = 0.1, .milestones = {5, 3}};
  CHECK_THROWS_WITH_AS(bad.validate(), doctest::Contains("increasing order"), Error);
}

TEST_CASE("the range chunks of the segment table: ranged rows numbered in order, others skipped") {
  // {offset, count, target, levels, range, first chunk}
  const int32_t grid = static_cast<int32_t>(ops::PsgTarget::Grid);
  const int32_t big = static_cast<int32_t>(2 * ops::kRangeChunk + 1);
  std::vector<int32_t> table = {0, 3,   grid, 7, 0, -1, 3,       5,  0, 0, -1, -1,
                                8, big, grid, 7, 1, -1, 8 + big, 64, 0, 0, -1, -1};
  CHECK(ops::number_range_chunks(table.data(), 4) == 4);
  CHECK(table[0 * ops::kSegmentFields + ops::kSegmentFirstChunk] == 0);
  CHECK(table[1 * ops::kSegmentFields + ops::kSegmentFirstChunk] == 1);  // the next ranged row's
  CHECK(table[2 * ops::kSegmentFields + ops::kSegmentFirstChunk] == 1);
  CHECK(table[3 * ops::kSegmentFields + ops::kSegmentFirstChunk] == 4);  // the total
}
