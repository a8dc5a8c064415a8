// The PSGD optimizer step on CUDA: the element update of the CPU twin in one launch over the
// flat buffers; each block loads the segment table into shared memory and finds an element's
// tensor by binary search over the offsets. The quantizer ranges take two more launches: the
// min and max of each chunk of a quantized tensor by its own block (one block per tensor would
// leave a 16.8M-value classifier to a single SM), then each tensor's chunks folded in order.
#include <algorithm>
#include <cmath>

#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/reduce.h"
#include "kernels/optim_math.h"
#include "kernels/quant_math.h"

namespace psgd::cuda {
namespace {

using optim_math::Segment;

// Blocks of the update: two waves of 8 per SM on the largest cards (132 SMs), so that where there
// are many weights a block loads the segment table once for many of them (VGG16-bn's 15M: ~29
// per thread), and where there are few, once per element as every block used to.
constexpr unsigned kSegmentBlocks = 2048;

// Runs update(i, segment) for every element i of every segment of the table. A thread's elements
// lie a grid apart, so its next one usually lies in the segment of its last: the binary search
// over the offsets runs only when it does not, and from that segment on.
template <class Update>
__global__ void segments_kernel(int64_t total, const int32_t* table, int rows, const float* ranges,
                                Update update) {
  await_prior_grids();
  Segment* segments = dynamic_shared<Segment>();
  for (int r = threadIdx.x; r < rows; r += blockDim.x)
    segments[r] = optim_math::read_segment(table + r * ops::kSegmentFields, ranges);
  __syncthreads();
  int at = 0;  // the last segment starting at or before the thread's last element (or the first)
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if (i >= segments[at].offset + segments[at].count) {
      int lo = at, hi = rows - 1;  // the last segment starting at or before i
      while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (segments[mid].offset <= i)
          lo = mid;
        else
          hi = mid - 1;
      }
      at = lo;
    }
    const Segment& s = segments[at];
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
  PSGD_LAUNCH(segments_kernel<Update>, std::min(blocks_for(weights.numel()), kSegmentBlocks),
              kThreads,
              rows * sizeof(Segment))
  (weights.numel(), segments.i32(), rows, ranges.numel() ? ranges.f32() : nullptr, update);
  CUDA_CHECK_LAUNCH();
}

// Block b: the min and max of chunk b of all ranged rows' chunks (kSegmentFirstChunk) into
// partials[b]. Its row is the last whose first chunk is at most b: a row without a range holds
// its successor's first chunk, so it is never the last.
__global__ void range_partials_kernel(const float* weights, const int32_t* table, int rows,
                                      float2* partials) {
  await_prior_grids();
  const auto first_chunk = [&](int r) {
    return table[r * ops::kSegmentFields + ops::kSegmentFirstChunk];
  };
  const int64_t b = blockIdx.x;
  int lo = 0, hi = rows - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (first_chunk(mid) <= b)
      lo = mid;
    else
      hi = mid - 1;
  }
  const int32_t* t = table + lo * ops::kSegmentFields;
  const int64_t start = (b - first_chunk(lo)) * ops::kRangeChunk;
  if (t[ops::kSegmentRange] < 0 || start >= t[ops::kSegmentCount]) return;  // past the chunks
  const int64_t count = min(ops::kRangeChunk, static_cast<int64_t>(t[ops::kSegmentCount]) - start);
  float low, high;
  block_min_max(weights + t[ops::kSegmentOffset] + start, count, low, high);
  if (threadIdx.x == 0) partials[b] = make_float2(low, high);
}

// One warp per ranged row folds the row's chunks into its running range (min and max are
// exact, so the order of the fold does not change them).
__global__ void range_fold_kernel(const int32_t* table, int rows, const float2* partials,
                                  float* ranges, bool first_step) {
  await_prior_grids();
  const int lane = threadIdx.x % kWarp;
  for (int r = threadIdx.x / kWarp; r < rows; r += blockDim.x / kWarp) {
    const int32_t* t = table + r * ops::kSegmentFields;
    const int32_t range = t[ops::kSegmentRange];
    if (range < 0) continue;
    const int64_t first = t[ops::kSegmentFirstChunk];
    const int64_t chunks = ops::weight_range_chunks(t[ops::kSegmentCount]);
    float low = INFINITY, high = -INFINITY;
    for (int64_t c = lane; c < chunks; c += kWarp) {
      low = fminf(low, partials[first + c].x);
      high = fmaxf(high, partials[first + c].y);
    }
    low = warp_min(low);
    high = warp_max(high);
    if (lane == 0) {
      ranges[2 * range] = quant::running_update(ranges[2 * range], fminf(0.0f, low), first_step);
      ranges[2 * range + 1] =
          quant::running_update(ranges[2 * range + 1], fmaxf(0.0f, high), first_step);
    }
  }
}

}  // namespace

void update_weight_ranges(const Tensor& weights, const Tensor& segments, const Tensor& ranges,
                          const Tensor& partials, bool first) {
  const int rows = static_cast<int>(segments.shape[0]);
  if (rows == 0) return;
  // One block per chunk: the partials' rows, sized by the caller from the same tensors.
  const int64_t chunks = partials.shape[0];
  auto* partial = reinterpret_cast<float2*>(partials.f32());
  if (chunks > 0) {
    PSGD_LAUNCH(range_partials_kernel, static_cast<unsigned>(chunks), kThreads)
    (weights.f32(), segments.i32(), rows, partial);
    CUDA_CHECK_LAUNCH();
  }
  PSGD_LAUNCH(range_fold_kernel, 1, kThreads)(segments.i32(), rows, partial, ranges.f32(), first);
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

void set_step_values(const Tensor& hyper, const Tensor& steps, float lr, double steps_done) {
  float* hp = hyper.f32();
  double* count = steps.f64();
  for_each(1, [=] __device__(int64_t) {
    hp[ops::kHyperLr] = lr;
    count[0] = steps_done;
  });
}

void adam_advance(const Tensor& hyper, const Tensor& steps, double beta1, double beta2) {
  float* hp = hyper.f32();
  double* count = steps.f64();
  for_each(1, [=] __device__(int64_t) {
    const double t = ++count[0];
    optim_math::adam_corrections(beta1, beta2, t, hp);
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
