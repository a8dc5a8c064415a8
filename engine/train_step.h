// One training step: forward, loss, backward, the gradient mean over the job's ranks and the
// optimizer update, with the loss and accuracy summed on the device. On a GPU the whole step is
// captured as a CUDA graph once per batch size (from the second step on, when every kernel's
// arguments have settled) and replayed with one launch; the host then only writes the learning
// rate when it changes and reads the sums now and then. On the CPU the same ops run directly.
#pragma once

#include <array>

#include "engine/comm.h"
#include "engine/metric_sums.h"
#include "engine/net.h"
#include "engine/optim.h"
#include "engine/step_graphs.h"

namespace psgd {

class TrainStep {
 public:
  TrainStep(Context& ctx, Net& net, Optimizer& optimizer, Comm& comm);

  // One step on (images, labels), both on the context's device. Their memory must stay where it
  // is for a captured step to replay (a move is noticed, and the step captured again).
  void run(const Tensor& images, const Tensor& labels, float lr);

  // {loss * samples, correct, correct in the top 5, samples} summed since the last reset, this
  // rank only. Reading waits for the device.
  std::array<double, ops::kMetricFields> totals() const { return totals_.read(); }
  void reset_totals() { totals_.reset(); }

  // Steps replayed from a captured graph so far (0 on the CPU).
  int64_t replays() const { return graphs_.replays(); }

 private:
  void launch(const Tensor& images, const Tensor& labels);

  Context& ctx_;
  Net& net_;
  Optimizer& optimizer_;
  Comm& comm_;
  MetricSums totals_;
  StepGraphs graphs_;
};

}  // namespace psgd
