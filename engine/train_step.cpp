#include "engine/train_step.h"

namespace psgd {

TrainStep::TrainStep(Context& ctx, Net& net, Optimizer& optimizer, Comm& comm)
    : ctx_(ctx),
      net_(net),
      optimizer_(optimizer),
      comm_(comm),
      totals_(ctx.device(), ops::kMetricFields * sizeof(double)) {}

void TrainStep::launch(const Tensor& images, const Tensor& labels) {
  const Tensor& logits = net_.forward(ctx_, images, Mode::Train);
  const Tensor& loss = net_.loss(ctx_, labels);
  ops::accumulate_metrics(ctx_, logits, labels, loss, totals_.f64(0, Shape{ops::kMetricFields}));
  net_.backward(ctx_);
  comm_.allreduce_mean(ctx_, net_.params().grads());
  optimizer_.apply(ctx_);
}

bool TrainStep::still_valid(const Captured& c, const Tensor& images, const Tensor& labels) const {
  return c.images == images.data && c.labels == labels.data &&
         c.net_memory == net_.memory_generation() && c.workspace == ctx_.workspace_generation();
}

void TrainStep::run(const Tensor& images, const Tensor& labels, float lr) {
  optimizer_.prepare(lr);
  if (ctx_.device() != Device::CUDA) {
    launch(images, labels);
    return;
  }
  const int64_t batch = images.shape[0];
  const auto found = graphs_.find(batch);
  if (found != graphs_.end() && still_valid(found->second, images, labels)) {
    net_.count_replayed_forward();
    found->second.graph.replay(ctx_);
    ++replays_;
    return;
  }
  // Capture once the optimizer's first-step arguments are behind, with the batch planned first
  // (no allocation may happen while capturing; a partial last batch gets its own graph); the
  // capture records this step, the replay runs it.
  if (net_.planned_batch() != batch) net_.plan(ctx_, batch);
  const bool settled = optimizer_.replayable() && net_.replayable();
  if (!settled) {
    launch(images, labels);
    return;
  }
  Captured c{CapturedGraph::capture(ctx_, [&] { launch(images, labels); }), images.data,
             labels.data, net_.memory_generation(), ctx_.workspace_generation()};
  c.graph.replay(ctx_);
  graphs_[batch] = std::move(c);
}

std::array<double, ops::kMetricFields> TrainStep::totals() const {
  std::array<double, ops::kMetricFields> out{};
  memory_copy(out.data(), Device::CPU, totals_.data(), totals_.device(), sizeof out);
  return out;
}

void TrainStep::reset_totals() {
  memory_zero(totals_.data(), totals_.device(), totals_.bytes());
}

}  // namespace psgd
