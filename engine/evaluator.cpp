#include "engine/evaluator.h"

#include "engine/weight_quant.h"

namespace psgd {

Evaluator::Evaluator(Context& ctx, Net& net, Comm& comm)
    : ctx_(ctx), net_(net), comm_(comm), sums_(ctx.device()) {}

void Evaluator::launch(const Tensor& images, const Tensor& labels) {
  const Tensor& logits = net_.forward(ctx_, images, Mode::Eval);
  ops::accumulate_metrics(ctx_, logits, labels, net_.loss(ctx_, labels), sums_.sums());
}

void Evaluator::run_batch(const Tensor& images, const Tensor& labels) {
  if (ctx_.device() != Device::CUDA || !net_.replayable(Mode::Eval)) {
    launch(images, labels);
    return;
  }
  if (graphs_.replay(ctx_, net_, images, labels)) return;
  const int64_t batch = images.shape[0];
  if (net_.planned_batch() != batch) net_.plan(ctx_, batch);
  if (graphs_.first_of_size(batch)) {  // evaluation's own kernels load outside a capture
    launch(images, labels);
    return;
  }
  graphs_.capture_and_replay(ctx_, net_, images, labels, [&] { launch(images, labels); });
}

EvalResult Evaluator::evaluate(BatchSource& source) {
  sums_.reset();
  source.start_epoch(0);
  Tensor images, labels;
  while (source.next(images, labels)) {
    if (labels.numel() == 0) continue;  // a rank's empty share of a small last batch
    run_batch(images, labels);
  }
  std::array<double, ops::kMetricFields> totals = sums_.read();
  comm_.allreduce_host(totals, ReduceOp::Sum);
  const double samples = totals[ops::kMetricSamples];
  PSGD_CHECK(samples > 0, "evaluation on an empty set");
  EvalResult r;
  r.samples = static_cast<int64_t>(samples);
  r.loss = totals[ops::kMetricLossSum] / samples;
  r.top1 = totals[ops::kMetricCorrect] / samples;
  r.top5 = totals[ops::kMetricCorrectTop5] / samples;
  return r;
}

EvalResult Evaluator::evaluate_low_precision(BatchSource& source) {
  WeightsSnapshot keep(net_.params());
  quantize_in_place(ctx_, net_.params());
  return evaluate(source);
}

}  // namespace psgd
