// Evaluation over a test set: each batch's forward in Eval mode, with its loss and top-1 and
// top-5 counts summed on the device and read once per pass. On a GPU each batch size's batch is
// captured as a CUDA graph (from the second batch of that size on, when the first has loaded
// its kernels) and replayed with one launch: a pass then costs the host one launch per batch.
// One evaluator serves the float (FP) network and the low-precision (LP) one, whose weights
// are quantized in place, where the graphs read them.
#pragma once

#include "engine/batch_source.h"
#include "engine/comm.h"
#include "engine/metric_sums.h"
#include "engine/net.h"
#include "engine/step_graphs.h"

namespace psgd {

struct EvalResult {
  double loss = 0.0, top1 = 0.0, top5 = 0.0;  // mean loss; accuracies in [0, 1]
  int64_t samples = 0;
};

class Evaluator {
 public:
  // In a job, each rank passes over its shard and the results are summed over `comm`.
  Evaluator(Context& ctx, Net& net, Comm& comm = single_rank());

  // One pass over `source`.
  EvalResult evaluate(BatchSource& source);
  // The same with every quantized tensor replaced by Q(w) (ranges fresh from the weights); the
  // float weights are restored afterwards.
  EvalResult evaluate_low_precision(BatchSource& source);

  // One batch, added to the pass's sums (for benchmarks; evaluate() calls it).
  void run_batch(const Tensor& images, const Tensor& labels);
  // Batches replayed from a captured graph so far (0 on the CPU).
  int64_t replays() const { return graphs_.replays(); }

 private:
  void launch(const Tensor& images, const Tensor& labels);

  Context& ctx_;
  Net& net_;
  Comm& comm_;
  MetricSums sums_;
  StepGraphs graphs_;
};

}  // namespace psgd
