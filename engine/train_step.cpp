#include "engine/train_step.h"

namespace psgd {

TrainStep::TrainStep(Context& ctx, Net& net, Optimizer& optimizer, Comm& comm)
    : ctx_(ctx), net_(net), optimizer_(optimizer), comm_(comm), totals_(ctx.device()) {}

void TrainStep::launch(const Tensor& images, const Tensor& labels) {
  const Tensor& logits = net_.forward(ctx_, images, Mode::Train);
  const Tensor& loss = net_.loss(ctx_, labels);
  ops::accumulate_metrics(ctx_, logits, labels, loss, totals_.sums());
  net_.backward(ctx_);
  comm_.allreduce_mean(ctx_, net_.params().grads());
  optimizer_.apply(ctx_);
}

void TrainStep::run(const Tensor& images, const Tensor& labels, float lr) {
  optimizer_.prepare(ctx_, lr);
  if (ctx_.device() != Device::CUDA) {
    launch(images, labels);
    return;
  }
  if (graphs_.replay(ctx_, net_, images, labels)) {
    net_.count_replayed_forward();
    return;
  }
  // Capture once the optimizer's first-step arguments are behind and this batch size has run op
  // by op, with the batch planned first (no allocation may happen while capturing; a partial
  // last batch gets its own graph).
  const int64_t batch = images.shape[0];
  if (net_.planned_batch() != batch) net_.plan(ctx_, batch);
  const bool first = graphs_.first_of_size(batch);
  if (first || !optimizer_.replayable() || !net_.replayable(Mode::Train)) {
    launch(images, labels);
    return;
  }
  graphs_.capture_and_replay(ctx_, net_, images, labels, [&] { launch(images, labels); });
}

}  // namespace psgd
