// Synchronised BN's stages on one rank, in order, as the GPU op suites run them against the CPU.
#pragma once

#include <vector>

#include "engine/memory.h"
#include "kernels/ops.h"

namespace psgd::test {

// v holds, in order: x, gamma, beta, running mean (also the shift), running var, mean, invstd,
// y, dy, dgamma, dbeta, dx; `channels` is x's second dimension.
inline void run_batch_norm_stages(Context& ctx, const std::vector<Tensor>& v, int64_t channels,
                                  ops::GradMode dx_mode) {
  ctx.reserve_workspace(ops::batch_norm_workspace_floats(ctx, v[0].shape));
  DeviceBuffer sums(ctx.device(), 2 * channels * sizeof(double));
  const Tensor s = sums.f64(0, Shape{2, channels});
  const int64_t count = v[0].numel() / channels;
  ops::batch_norm_moments(ctx, v[0], v[3], s);
  ops::batch_norm_stats(ctx, v[3], s, count, {}, v[3], v[4], v[5], v[6]);
  ops::batch_norm_normalize(ctx, v[0], v[1], v[2], v[5], v[6], v[7]);
  ops::batch_norm_backward_reduce(ctx, v[0], v[8], v[5], v[6], s, v[9], v[10]);
  ops::batch_norm_backward_input(ctx, v[0], v[8], v[1], v[5], v[6], s, count, v[11], dx_mode);
}

}  // namespace psgd::test
