// The PSGD optimizer step on CUDA: the element update of the CPU twin in one launch over the
// flat buffers; each block loads the segment table into shared memory and finds an element's
// tensor by binary search over the offsets. The quantizer ranges take one more launch, one
// block per tensor.
#include <cmath>

#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/reduce.h"
#include "kernels/optim_math.h"
#include "kernels/quant_math.h"

namespace psgd::cuda {
namespace {

using optim_math::Segment;

// Runs update(i, segment) for every element i of every segment of the table.
template <class Update>
__global__ void segments_kernel(int64_t total, const int32_t* table, int rows, const float* ranges,
                                Update update) {
  extern __shared__ Segment segments[];
  for (int r = threadIdx.x; r < rows; r += blockDim.x)
    segments[r] = optim_math::read_segment(table + r * ops::kSegmentFields, ranges);
  __syncthreads();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int lo = 0, hi = rows - 1;  // the last segment starting at or before i
    while (lo < hi) {
      const int mid = (lo + hi + 1) / 2;
      if (segments[mid].offset <= i)
        lo = mid;
      else
        hi = mid - 1;
    }
    const Segment& s = segments[lo];
    if (i >= s.offset && i < s.offset + s.count) update(i, s);
  }
}

template <class Update>
void for_each_segment_element(const Tensor& weights, const Tensor& segments, const Tensor& ranges,
                              Update update) {
  const int rows = static_cast<int>(segments.shape[0]);
  if (rows == 0 || weights.numel() == 0) return;
  // The table sits in shared memory: the default 48 KB hold about 1,500 tensors.
  PSGD_CHECK(rows * sizeof(Segment) <= 48 * 1024, "the optimizer's table of ", rows,
             " tensors does not fit in shared memory");
  segments_kernel<<<blocks_for(weights.numel()), kThreads, rows * sizeof(Segment)>>>(
      weights.numel(), segments.i32(), rows, ranges.numel() ? ranges.f32() : nullptr, update);
  CUDA_CHECK_LAUNCH();
}

__global__ void ranges_kernel(const float* weights, const int32_t* table, float* ranges,
                              bool first) {
  const int32_t* t = table + blockIdx.x * ops::kSegmentFields;
  const int32_t range = t[ops::kSegmentRange];
  if (range < 0) return;  // the whole block leaves together
  float lo, hi;
  block_min_max(weights + t[ops::kSegmentOffset], t[ops::kSegmentCount], lo, hi);
  if (threadIdx.x == 0) {
    ranges[2 * range] = quant::running_update(ranges[2 * range], fminf(0.0f, lo), first);
    ranges[2 * range + 1] = quant::running_update(ranges[2 * range + 1], fmaxf(0.0f, hi), first);
  }
}

}  // namespace

void update_weight_ranges(const Tensor& weights, const Tensor& segments, const Tensor& ranges,
                          bool first) {
  if (segments.shape[0] == 0) return;
  ranges_kernel<<<static_cast<unsigned>(segments.shape[0]), kThreads>>>(
      weights.f32(), segments.i32(), ranges.f32(), first);
  CUDA_CHECK_LAUNCH();
}

void psgd_sgd_step(const Tensor& weights, const Tensor& grads, const Tensor& momentum,
                   const Tensor& segments, const Tensor& ranges, const Tensor& hyper,
                   ops::SgdStep h) {
  float* w = weights.f32();
  const float* g = grads.f32();
  float* buf = momentum.f32();
  const float* hp = hyper.f32();
  for_each_segment_element(weights, segments, ranges, [=] __device__(int64_t i, const Segment& s) {
    optim_math::sgd_update(s, h, hp[ops::kHyperLr], w[i], g[i], buf[i]);
  });
}

void psgd_adam_step(const Tensor& weights, const Tensor& grads, const Tensor& m, const Tensor& v,
                    const Tensor& segments, const Tensor& ranges, const Tensor& hyper,
                    ops::AdamStep h) {
  float* w = weights.f32();
  const float* g = grads.f32();
  float* mp = m.f32();
  float* vp = v.f32();
  const float* hp = hyper.f32();
  for_each_segment_element(weights, segments, ranges, [=] __device__(int64_t i, const Segment& s) {
    optim_math::adam_update(s, h, hp[ops::kHyperAdamStepSize], hp[ops::kHyperAdamRootBias2], w[i],
                            g[i], mp[i], vp[i]);
  });
}

}  // namespace psgd::cuda
