// Weight and activation quantization: Q(w), ranges, which tensors are quantized, LP evaluation,
// activation quantization, pruning and the per-layer report.
#include <doctest/doctest.h>

#include <cmath>
#include <set>

#include "engine/activation_quant.h"
#include "engine/layers/elementwise.h"
#include "engine/pruning.h"
#include "engine/quant_report.h"
#include "engine/optim.h"
#include "engine/weight_quant.h"
#include "kernels/ops.h"
#include "kernels/quant_math.h"
#include "nets/nets.h"
#include "nets/quant_config.h"
#include "tests/support/host_tensor.h"

using namespace psgd;
using namespace psgd::test;

TEST_CASE("Q(w): 4-bit grid, ties to even, the clamp, an all-zero tensor") {
  CHECK(quant::weight_levels(4) == 7);
  CHECK(quant::weight_levels(2) == 1);
  CHECK(quant::activation_levels(4) == 15);
  const float delta = quant::weight_delta(-0.35f, 0.7f, 7);  // max(|min|, max) / 7
  CHECK(delta == 0.7f / 7.0f);
  Context ctx(Device::CPU, 1);
  // w / delta = 0.5, 1.5, 2.5, -0.5, -2.5 (ties), 3.4, 9 and -12 (clamped to +-7)
  HostTensor w(Shape{8}), q(Shape{8});
  const float ratios[] = {0.5f, 1.5f, 2.5f, -0.5f, -2.5f, 3.4f, 9.0f, -12.0f};
  const float expect[] = {0, 2, 2, 0, -2, 3, 7, -7};
  for (int i = 0; i < 8; ++i) w[i] = ratios[i] * 0.25f;
  ops::quantize_weights(ctx, w.t(), 0.25f, 7, q.t());
  for (int i = 0; i < 8; ++i) CHECK(q[i] == expect[i] * 0.25f);
  HostTensor zeros(Shape{3}), out(Shape{3}, 1.0f);
  ops::quantize_weights(ctx, zeros.t(), 0.0f, 7, out.t());
  CHECK(out[0] == 0.0f);
}

TEST_CASE("activation quantization: ReLU, the grid 0 .. 2^a - 1 and the clamp") {
  Context ctx(Device::CPU, 1);
  HostTensor x(Shape{5}), y(Shape{5});
  const float in[] = {-1.0f, 0.05f, 0.25f, 1.1f, 9.0f};
  for (int i = 0; i < 5; ++i) x[i] = in[i];
  ops::quantize_activations(ctx, x.t(), 0.1f, 15, y.t());  // range 1.5 at 4 bits
  CHECK(y[0] == 0.0f);
  CHECK(y[1] == 0.0f);                       // 0.5 rounds to even 0
  CHECK(y[2] == doctest::Approx(0.2f));      // 2.5 rounds to even 2
  CHECK(y[3] == doctest::Approx(1.1f));
  CHECK(y[4] == doctest::Approx(1.5f));      // clamped to 15 levels
}

TEST_CASE("which tensors are quantized: ResNet and VGG, first/last on and off, 2 bits") {
  auto r = make_net("resnet20", 10, Device::CPU, 0);
  ParamStore& p = r->params();
  const auto bits = [&](const char* name) { return p.entry(p.find(name)).quant.bits; };
  assign_quantizers(p, {.w_bits = 4, .first_last = false});
  CHECK(bits("layer1.0.conv1.weight") == 4);
  CHECK(bits("layer2.0.downsample.0.weight") == 4);
  CHECK(bits("conv1.weight") == 0);
  CHECK(bits("fc.weight") == 0);
  CHECK(bits("fc.bias") == 0);
  CHECK(bits("bn1.weight") == 0);
  assign_quantizers(p, {.w_bits = 4, .first_last = true});
  CHECK(bits("conv1.weight") == 4);
  CHECK(bits("fc.bias") == 4);
  assign_quantizers(p, {.w_bits = 2, .first_last = true});
  CHECK(bits("layer3.2.conv2.weight") == 2);
  CHECK(bits("conv1.weight") == 8);
  CHECK(bits("fc.weight") == 8);
  CHECK(p.entry(p.find("fc.weight")).quant.psg);
  assign_quantizers(p, {.w_bits = 32});
  CHECK(bits("layer1.0.conv1.weight") == 0);
  CHECK_THROWS_WITH_AS(assign_quantizers(p, {.w_bits = 1}), doctest::Contains("2..8 or 32"),
                       Error);

  auto v = vgg16_bn(10, Device::CPU, 0);
  ParamStore& q = v->params();
  assign_quantizers(q, {.w_bits = 3, .first_last = false});
  const auto vbits = [&](const char* name) { return q.entry(q.find(name)).quant.bits; };
  CHECK(vbits("features.0.weight") == 0);
  CHECK(vbits("features.3.weight") == 3);
  CHECK(vbits("classifier.0.weight") == 3);
  CHECK(vbits("classifier.3.bias") == 3);
  CHECK(vbits("classifier.6.weight") == 0);
  CHECK(vbits("features.1.weight") == 0);  // BN
}

TEST_CASE("running ranges: the first step sets them, later ones move by momentum 0.1") {
  ParamStore p;
  p.add("bn.weight", Shape{3}, ParamRole::BnWeight);  // a tensor without a range comes first
  const int w = p.add("conv.weight", Shape{4}, ParamRole::ConvWeight);
  p.allocate(Device::CPU);
  p.set_quant(w, {4, true, QuantTarget::Grid});
  Context ctx(Device::CPU, 1);
  Optimizer opt(p, {.lambda_s = 1.0f});  // its segment table names the range of each tensor
  RunningRanges& ranges = opt.ranges();
  const Tensor v = p.value(w);
  const float first[] = {0.2f, 0.5f, 0.1f, 0.3f};  // all positive: x_min clamps to 0
  for (int i = 0; i < 4; ++i) v.f32()[i] = first[i];
  for (int i = 0; i < 3; ++i) p.value(0).f32()[i] = 9.0f;  // must not leak into the range
  ranges.update(ctx, p.weights(), opt.segments());
  CHECK(ranges.x_min()[0] == 0.0f);
  CHECK(ranges.x_max()[0] == 0.5f);
  const float second[] = {-0.4f, 0.1f, 0.9f, 0.0f};
  for (int i = 0; i < 4; ++i) v.f32()[i] = second[i];
  ranges.update(ctx, p.weights(), opt.segments());
  CHECK(ranges.x_min()[0] == 0.1f * -0.4f + 0.9f * 0.0f);
  CHECK(ranges.x_max()[0] == 0.1f * 0.9f + 0.9f * 0.5f);
}

TEST_CASE("LP evaluation quantizes every quantized tensor and leaves the float weights") {
  auto net = make_net("resnet20", 10, Device::CPU, 3);
  assign_quantizers(net->params(), {.w_bits = 3, .first_last = true});
  Context ctx(Device::CPU, 2);
  HostTensor images(Shape{4, 3, 32, 32});
  fill_uniform(images.t(), -1, 1, 2, 0);
  const Tensor w = net->params().weights();
  const std::vector<float> before(w.f32(), w.f32() + w.numel());
  const Tensor& fp = net->forward(ctx, images.t(), Mode::Eval);
  const std::vector<float> fp_logits(fp.f32(), fp.f32() + fp.numel());
  {
    WeightsSnapshot keep(net->params());
    quantize_in_place(ctx, net->params());
    const int id = net->params().find("layer1.0.conv1.weight");
    const Tensor q = net->params().value(id);
    std::set<float> levels(q.f32(), q.f32() + q.numel());
    CHECK(levels.size() <= 7);  // 3 bits: -3 .. 3
    const Tensor& lp = net->forward(ctx, images.t(), Mode::Eval);
    double diff = 0;
    for (int64_t i = 0; i < lp.numel(); ++i) diff += std::fabs(lp.f32()[i] - fp_logits[i]);
    CHECK(diff > 0.0);
  }
  for (int64_t i = 0; i < w.numel(); ++i) REQUIRE(w.f32()[i] == before[i]);
}

TEST_CASE("activation quantization: running and clipped ranges") {
  auto net = make_net("resnet20", 10, Device::CPU, 3);
  Context ctx(Device::CPU, 2);
  HostTensor a(Shape{2, 3, 32, 32}), b(Shape{2, 3, 32, 32});
  fill_uniform(a.t(), -1, 1, 4, 0);
  fill_uniform(b.t(), -3, 3, 4, 1);
  ParamStore& p = net->params();
  const Tensor gamma = p.value(p.find("layer1.0.bn1.weight"));
  const Tensor beta = p.value(p.find("layer1.0.bn1.bias"));
  gamma.f32()[3] = 0.5f;
  beta.f32()[3] = 2.0f;  // channel 3: 2 + 6 * 0.5 = 5 is the largest, others 6 * 1 + 0 = 6
  beta.f32()[5] = 0.5f;  // channel 5: 0.5 + 6 = 6.5
  const auto relu = [&](const std::string& name) {
    for (Layer* l : net->layers())
      if (l->name() == name) return dynamic_cast<ReLU*>(l);
    return static_cast<ReLU*>(nullptr);
  };

  const ActivationQuantSummary clipped =
      set_activation_quant(*net, {.bits = 4, .range = ActivationRange::Clipped, .clip_n = 6});
  CHECK(clipped.clipped == 19);  // the stem ReLU and two per block, each after a BN
  CHECK(clipped.running == 0);
  CHECK(relu("layer1.0.relu1")->activation_max() == 6.5f);
  net->forward(ctx, a.t(), Mode::Eval);
  const Tensor& out = net->layer_output(2);  // conv1, bn1, then the stem ReLU
  REQUIRE(net->layers()[2] == relu("relu"));
  std::set<float> values(out.f32(), out.f32() + out.numel());
  CHECK(values.size() <= 16);
  CHECK_THROWS_WITH_AS(net->forward(ctx, a.t(), Mode::Train),
                       doctest::Contains("for evaluation only"), Error);

  set_activation_quant(*net, {.bits = 4, .range = ActivationRange::Running});
  net->forward(ctx, a.t(), Mode::Eval);
  const float first = relu("relu")->activation_max();
  CHECK(first > 0.0f);
  net->forward(ctx, b.t(), Mode::Eval);
  const float second = relu("relu")->activation_max();
  CHECK(second != first);
  set_activation_quant(*net, {.bits = 32});
  CHECK(relu("relu")->activation_bits() == 0);
}

TEST_CASE("pruning reaches the exact sparsity, per layer and globally") {
  auto net = make_net("resnet20", 10, Device::CPU, 5);
  assign_quantizers(net->params(), {.w_bits = 4});
  {
    WeightsSnapshot keep(net->params());
    for (const LayerSparsity& s : prune_by_magnitude(net->params(), 0.3, PruneScope::PerLayer))
      CHECK(s.zeros == std::llround(0.3 * s.count));
  }
  for (const LayerSparsity& s : measure_sparsity(net->params())) CHECK(s.zeros == 0);
  const std::vector<LayerSparsity> global =
      prune_by_magnitude(net->params(), 0.5, PruneScope::Global);
  int64_t zeros = 0, count = 0;
  for (const LayerSparsity& s : global) {
    zeros += s.zeros;
    count += s.count;
  }
  CHECK(zeros == std::llround(0.5 * count));
  CHECK_THROWS_AS(prune_by_magnitude(net->params(), 1.5, PruneScope::Global), Error);
}

TEST_CASE("the per-layer report: delta, MAPE, SSE, SQNR and sparsity") {
  ParamStore p;
  const int w = p.add("conv.weight", Shape{4}, ParamRole::ConvWeight);
  p.allocate(Device::CPU);
  p.set_quant(w, {2, false, QuantTarget::Grid});  // levels -1, 0, 1
  const float values[] = {1.0f, -0.6f, 0.2f, 0.0f};
  for (int i = 0; i < 4; ++i) p.value(w).f32()[i] = values[i];
  Context ctx(Device::CPU, 1);
  const std::vector<QuantReportRow> rows = quantization_report(ctx, p);
  REQUIRE(rows.size() == 1);
  const QuantReportRow& r = rows[0];
  CHECK(r.delta == 1.0);  // Q = {1, -1, 0, 0}
  CHECK(r.sse == doctest::Approx(0.16 + 0.04));
  CHECK(r.mape == doctest::Approx((0.0 + 0.4 / 0.6 + 1.0 + 0.0) / 4).epsilon(1e-6));
  CHECK(r.sqnr_db == doctest::Approx(10 * std::log10((1 + 0.36 + 0.04) / 0.2)).epsilon(1e-6));
  CHECK(r.sparsity == 0.25);
  CHECK(r.q_zeros == 0.5);
}
