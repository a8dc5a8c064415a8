// Evaluation passes on the CPU: a pass's sums against the loss and top-k counts computed in
// float64 from each batch's logits, LP evaluation of the quantized weights with the float ones
// restored, and which networks a captured evaluation may replay. The captured GPU passes are
// tested against op-by-op ones in test_cuda_train.cpp.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "data/loader.h"
#include "engine/activation_quant.h"
#include "engine/evaluator.h"
#include "engine/weight_quant.h"
#include "nets/nets.h"
#include "nets/quant_config.h"
#include "tests/support/pattern_dataset.h"

using namespace psgd;
using namespace psgd::test;

namespace {

struct HostSums {
  double loss = 0.0;
  int64_t top1 = 0, top5 = 0, samples = 0;
};

// Cross-entropy and top-k counts from each batch's logits, in float64 on the host.
HostSums host_pass(Context& ctx, Net& net, BatchSource& source) {
  HostSums s;
  source.start_epoch(0);
  Tensor images, labels;
  while (source.next(images, labels)) {
    const Tensor& out = net.forward(ctx, images, Mode::Eval);
    const int64_t n = out.shape[0], k = out.shape[1];
    for (int64_t i = 0; i < n; ++i) {
      const float* row = out.f32() + i * k;
      const float truth = row[labels.i32()[i]];
      const double top = *std::max_element(row, row + k);
      double sum = 0.0;
      for (int64_t j = 0; j < k; ++j) sum += std::exp(row[j] - top);
      s.loss += top + std::log(sum) - truth;
      const auto above = std::count_if(row, row + k, [&](float v) { return v > truth; });
      s.top1 += above == 0;
      s.top5 += above < 5;
      ++s.samples;
    }
  }
  return s;
}

void check_matches(const EvalResult& r, const HostSums& s) {
  REQUIRE(r.samples == s.samples);
  CHECK(r.loss == doctest::Approx(s.loss / s.samples).epsilon(1e-5));
  CHECK(r.top1 == doctest::Approx(static_cast<double>(s.top1) / s.samples).epsilon(1e-12));
  CHECK(r.top5 == doctest::Approx(static_cast<double>(s.top5) / s.samples).epsilon(1e-12));
}

}  // namespace

TEST_CASE("evaluate: a pass sums every batch's loss, top-1 and top-5, the partial last one too") {
  Context ctx(Device::CPU, 2);
  auto net = make_net("resnet20", 10, Device::CPU, 3);
  const data::Dataset d = pattern_dataset(70, 10);  // batches of 32, 32 and 6
  const auto loader = data::make_loader(d, {.batch_size = 32, .shuffle = false, .augment = false},
                                        {}, Device::CPU);
  Evaluator evaluator(ctx, *net);
  const EvalResult r = evaluator.evaluate(*loader);
  check_matches(r, host_pass(ctx, *net, *loader));
  CHECK(r.top5 > r.top1);  // the counts are not the same one
  // A second pass starts from zero.
  check_matches(evaluator.evaluate(*loader), host_pass(ctx, *net, *loader));
  CHECK(evaluator.replays() == 0);  // graphs are for GPUs
}

TEST_CASE("evaluate: LP evaluation sees Q(w) and leaves the float weights as they were") {
  Context ctx(Device::CPU, 2);
  auto net = make_net("resnet20", 10, Device::CPU, 3);
  assign_quantizers(net->params(), {.w_bits = 2, .first_last = true, .psg = false});
  const data::Dataset d = pattern_dataset(40, 10);
  const auto loader = data::make_loader(d, {.batch_size = 16, .shuffle = false, .augment = false},
                                        {}, Device::CPU);
  const Tensor w = net->params().weights();
  const std::vector<float> before(w.f32(), w.f32() + w.numel());
  Evaluator evaluator(ctx, *net);
  const EvalResult fp = evaluator.evaluate(*loader);
  const EvalResult lp = evaluator.evaluate_low_precision(*loader);
  CHECK(std::vector<float>(w.f32(), w.f32() + w.numel()) == before);
  CHECK(lp.loss != fp.loss);  // 2-bit weights change the logits
  WeightsSnapshot keep(net->params());
  quantize_in_place(ctx, net->params());
  check_matches(lp, host_pass(ctx, *net, *loader));
}

TEST_CASE("evaluate: a network with quantized activations is never replayed from a graph") {
  auto net = make_net("resnet20", 10, Device::CPU, 3);
  CHECK(net->replayable(Mode::Eval));
  set_activation_quant(*net, {.bits = 4});  // the range read back after every batch
  CHECK_FALSE(net->replayable(Mode::Eval));
  set_activation_quant(*net, {.bits = 4, .range = ActivationRange::Clipped});  // fixed in kernels
  CHECK_FALSE(net->replayable(Mode::Eval));
  set_activation_quant(*net, {});
  CHECK(net->replayable(Mode::Eval));
  CHECK(net->replayable(Mode::Train));
}
