// The pieces of batch normalisation on CUDA (batch_norm.cu, batch_norm_stages.cu): the shape with
// its fast channel index, the scratch in the workspace, the split per-channel reductions with
// their fold and the elementwise passes. See batch_norm.cu for the design.
#pragma once

#include <algorithm>

#include "kernels/bn_math.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/reduce.h"
#include "kernels/cuda/vector_access.h"
#include "kernels/cuda/workspace.h"
#include "kernels/fast_divide.h"

namespace psgd::cuda::bn {

// Blocks to aim for in a reduction: a few per SM on the largest cards (132 SMs on an H100).
constexpr int64_t kReductionBlocks = 512;
// The most channels the reductions take (their tickets, below).
inline constexpr int64_t kMaxChannels = 16384;

// x is (N, C, H, W) or (N, C): statistics over N and the spatial positions. Element indices fit
// in 32 bits (checked), so that the channel of an element costs two fast divisions.
struct BnDims {
  int64_t n, c, hw;
  int64_t splits;  // blocks per channel in the reductions, each over images [s n / S, (s+1) n / S)
  FastDivisor hw_divisor, c_divisor;

  __host__ __device__ int64_t count() const { return n * hw; }
  __device__ int64_t channel_of(int64_t element) const {
    return c_divisor.remainder(hw_divisor.divide(static_cast<uint32_t>(element)));
  }
};

// Blocks per channel: enough for kReductionBlocks in all, at most one per image.
inline int64_t splits_for(int64_t n, int64_t c) {
  return std::clamp<int64_t>((kReductionBlocks + c - 1) / c, 1, std::max<int64_t>(n, 1));
}

// The input shapes these kernels take: channels and positions, element indices in 32 bits.
inline void check_input(const Shape& x) {
  const int64_t positions = x.rank() == 4 ? x[2] * x[3] : 1;
  PSGD_CHECK(x[1] >= 1 && positions >= 1 && x.numel() <= INT32_MAX, "batch norm: ", x.str(),
             " needs channels and positions, and fewer than 2^31 elements");
  PSGD_CHECK(x[1] <= kMaxChannels, "batch norm: ", x.str(), " has more than ", kMaxChannels,
             " channels");
}

inline BnDims dims_of(const Tensor& x) {
  BnDims d;
  d.n = x.shape[0];
  d.c = x.shape[1];
  d.hw = x.shape.rank() == 4 ? x.shape[2] * x.shape[3] : 1;
  check_input(x.shape);
  d.splits = splits_for(d.n, d.c);
  d.hw_divisor = FastDivisor(static_cast<uint32_t>(d.hw));
  d.c_divisor = FastDivisor(static_cast<uint32_t>(d.c));
  return d;
}

// The scratch of one call in the workspace: each block's two partial sums, then per channel the
// coefficients of the elementwise pass that follows.
struct Scratch {
  double2* partials;    // (C * splits)
  float* coefficients;  // (kCoefficients, C)
};
constexpr int kCoefficients = 3;

inline WorkspaceLayout scratch_layout(int64_t c, int64_t splits, size_t* coefficients_offset) {
  WorkspaceLayout layout;
  layout.add(static_cast<size_t>(c * splits) * sizeof(double2));
  *coefficients_offset = layout.add(static_cast<size_t>(kCoefficients * c) * sizeof(float));
  return layout;
}

inline Scratch scratch_for(const Context& ctx, const BnDims& d) {
  size_t coefficients = 0;
  const WorkspaceLayout layout = scratch_layout(d.c, d.splits, &coefficients);
  auto* base = static_cast<std::byte*>(ctx.workspace(layout.floats()).data);
  return {reinterpret_cast<double2*>(base), reinterpret_cast<float*>(base + coefficients)};
}

// A channel's sums over its splits, by one warp: each lane adds every 32nd split, then the lanes
// combine down a fixed tree, so the order is the same whichever block folds. Read past L1, which
// may hold lines of an earlier kernel: the partials were written by other blocks of this one.
inline __device__ double2 channel_total(const double2* partials, int64_t ch, int64_t splits) {
  double a = 0.0, b = 0.0;
  for (int64_t s = threadIdx.x % kWarp; s < splits; s += kWarp) {
    const double2 p = __ldcg(partials + ch * splits + s);
    a += p.x;
    b += p.y;
  }
  return make_double2(warp_sum(a), warp_sum(b));
}

// One ticket per channel for the block that finishes a channel's reduction (last_to_arrive).
namespace {
__device__ unsigned channel_tickets[kMaxChannels];
}

// Whether the passes may go 4 elements at a time: every run of a channel's elements
// is a multiple of 4 long and each tensor (null passes) is aligned for 4-wide accesses.
template <class... T>
bool four_wide(const BnDims& d, const T*... tensors) {
  return d.hw % 4 == 0 && (lanes_aligned<4>(tensors) && ...);
}

// Block (channel, split) sums pair(o) = {a, b}, the sums over the W elements from o, over its
// images of the channel and writes them to partials[blockIdx.x]; the last block of the channel to
// finish then calls fold(ch, totals) with the channel's sums over all its splits, added by its
// first warp in a fixed order whichever block is last (so the result does not depend on timing),
// on its thread 0. This saves a launch per reduction. W = 4 where four_wide allows: a stage-1
// block of ResNet-32 at batch 128 (4 images of 1,024 values) then has all its loads in flight at
// once, where scalar loads took four rounds.
template <int W, class F, class Fold>
__device__ void block_partials(const BnDims& d, F pair, double2* partials, Fold fold) {
  const int64_t ch = blockIdx.x / d.splits, s = blockIdx.x % d.splits;
  const int64_t n0 = s * d.n / d.splits, n1 = (s + 1) * d.n / d.splits;
  const uint32_t count = static_cast<uint32_t>((n1 - n0) * d.hw);  // a multiple of W, as hw is
  double a = 0.0, b = 0.0;
  // Unrolled so that each thread has several loads in flight.
#pragma unroll 4
  for (uint32_t i = threadIdx.x * W; i < count; i += blockDim.x * W) {
    const uint32_t image = d.hw_divisor.divide(i);
    const int64_t o = ((n0 + image) * d.c + ch) * d.hw + (i - image * d.hw);
    const double2 v = pair(o);
    a += v.x;
    b += v.y;
  }
  a = block_sum(a);
  b = block_sum(b);
  if (threadIdx.x == 0) partials[blockIdx.x] = make_double2(a, b);
  if (!last_to_arrive(&channel_tickets[ch], static_cast<unsigned>(d.splits)) ||
      threadIdx.x >= kWarp)
    return;
  const double2 total = channel_total(partials, ch, d.splits);
  if (threadIdx.x == 0) fold(ch, total);
}

// {x - centre, (x - centre)^2}, centre the shift's value for the channel, or without a shift the
// channel's first value (against cancellation when the mean is large against the spread).
template <int W, class T, class Fold>
__global__ void moments_kernel(BnDims d, const T* x, const float* shift, double2* partials,
                               Fold fold) {
  await_prior_grids();
  const int64_t ch = blockIdx.x / d.splits;
  const double centre = shift ? shift[ch] : load(x, ch * d.hw);
  block_partials<W>(
      d,
      [=](int64_t o) {
        const Lanes<W> xs = load_lanes<W>(x, o);
        double a = 0.0, b = 0.0;
        for (int i = 0; i < W; ++i) {
          const double v = xs.v[i] - centre;
          a += v;
          b += v * v;
        }
        return make_double2(a, b);
      },
      partials, fold);
}

// The ReLU fused onto BN's output, in the backward: the gradient reaching BN's output is dy where
// the ReLU is open, which is where its output relu_y is positive, or (given beta instead) where
// the forward's output recomputed from x is (bn_math.h). Neither: no ReLU.
template <class T>
struct ReluMask {
  const T* relu_y = nullptr;
  const float* beta = nullptr;

  // The gradient reaching BN's output from dy, given relu_y's value where it is read, and x with
  // the channel's mean, the forward's scale and beta where it is recomputed.
  __device__ float gradient(float g, float relu_value, float x, float mean, float scale,
                            float channel_beta) const {
    if (relu_y) return relu_value > 0.0f ? g : 0.0f;
    if (beta)
      return bn_math::relu_open<T>(bn_math::affine(x, mean, scale, channel_beta)) ? g : 0.0f;
    return g;
  }
  // The forward's per-channel constants, where the mask is recomputed.
  __device__ float scale_of(const float* gamma, const float* invstd, int64_t ch) const {
    return beta ? bn_math::training_scale(gamma[ch], invstd[ch]) : 0.0f;
  }
  __device__ float beta_of(int64_t ch) const { return beta ? beta[ch] : 0.0f; }
};

// {g, g * (x - mean)}, g the gradient reaching BN's output (ReluMask; gamma and invstd give the
// forward's scale where it recomputes the mask, and may be null where it does not).
template <int W, class T, class Fold>
__global__ void gradient_sums_kernel(BnDims d, const T* x, const T* dy, ReluMask<T> mask,
                                     const float* mean, const float* gamma, const float* invstd,
                                     double2* partials, Fold fold) {
  await_prior_grids();
  const int64_t ch = blockIdx.x / d.splits;
  const float mu = mean[ch], mask_scale = mask.scale_of(gamma, invstd, ch),
              mask_beta = mask.beta_of(ch);
  block_partials<W>(
      d,
      [=](int64_t o) {
        const Lanes<W> xs = load_lanes<W>(x, o), gs = load_lanes<W>(dy, o);
        const Lanes<W> open = mask.relu_y ? load_lanes<W>(mask.relu_y, o) : Lanes<W>{};
        double a = 0.0, b = 0.0;
        for (int i = 0; i < W; ++i) {
          const float g = mask.gradient(gs.v[i], open.v[i], xs.v[i], mu, mask_scale, mask_beta);
          a += g;
          b += static_cast<double>(g) * (xs.v[i] - mu);
        }
        return make_double2(a, b);
      },
      partials, fold);
}

// The reductions' launches; fold(ch, totals) as in block_partials.
template <class T, class Fold>
void launch_moments(const BnDims& d, const T* x, const float* shift, double2* partials, Fold fold) {
  const auto blocks = static_cast<unsigned>(d.c * d.splits);
  if (four_wide(d, x))
    PSGD_LAUNCH((moments_kernel<4, T, Fold>), blocks, kThreads)(d, x, shift, partials, fold);
  else
    PSGD_LAUNCH((moments_kernel<1, T, Fold>), blocks, kThreads)(d, x, shift, partials, fold);
  CUDA_CHECK_LAUNCH();
}

template <class T, class Fold>
void launch_gradient_sums(const BnDims& d, const T* x, const T* dy, ReluMask<T> mask,
                          const float* mean, const float* gamma, const float* invstd,
                          double2* partials, Fold fold) {
  const auto blocks = static_cast<unsigned>(d.c * d.splits);
  if (four_wide(d, x, dy, mask.relu_y)) {
    PSGD_LAUNCH((gradient_sums_kernel<4, T, Fold>), blocks, kThreads)
    (d, x, dy, mask, mean, gamma, invstd, partials, fold);
  } else {
    PSGD_LAUNCH((gradient_sums_kernel<1, T, Fold>), blocks, kThreads)
    (d, x, dy, mask, mean, gamma, invstd, partials, fold);
  }
  CUDA_CHECK_LAUNCH();
}

// y = (x - shift[c]) * scale[c] + beta[c], plus the residual where given, then ReLU where
// asked; shift and scale are the first two rows of `coefficients`. W elements per thread.
template <int W, class T>
void normalise_lanes(const BnDims& d, const T* in, const float* coefficients, const float* beta,
                     const T* residual, bool relu, T* out) {
  const float *shift = coefficients, *scale = coefficients + d.c;
  for_each(d.n * d.c * d.hw / W, [=] __device__(int64_t q) {
    const int64_t o = q * W, ch = d.channel_of(o);
    const Lanes<W> x = load_lanes<W>(in, o);
    const Lanes<W> r = residual ? load_lanes<W>(residual, o) : Lanes<W>{};
    Lanes<W> y;
    for (int i = 0; i < W; ++i) {
      float v = bn_math::affine(x.v[i], shift[ch], scale[ch], beta[ch]);
      if (residual) v += r.v[i];
      y.v[i] = relu && !(v > 0.0f) ? 0.0f : v;
    }
    store_lanes<W>(out, o, y);
  });
}

template <class T>
void normalise(const BnDims& d, const T* in, const float* coefficients, const float* beta,
               const T* residual, bool relu, T* out) {
  if (four_wide(d, in, residual, static_cast<const T*>(out)))
    normalise_lanes<4>(d, in, coefficients, beta, residual, relu, out);
  else
    normalise_lanes<1>(d, in, coefficients, beta, residual, relu, out);
}

// dx = k (g - mean_dy - (x - mean) slope), g as in gradient_sums_kernel; k (the forward's scale),
// mean_dy and slope are the rows of `coefficients`. W elements per thread.
template <int W, class T>
void input_gradient_lanes(const BnDims& d, const T* x, const T* dy, ReluMask<T> mask,
                          const float* mean, const float* coefficients, bool accumulate, T* dx) {
  const float *k = coefficients, *mean_dy = coefficients + d.c, *slope = coefficients + 2 * d.c;
  for_each(d.n * d.c * d.hw / W, [=] __device__(int64_t q) {
    const int64_t o = q * W, ch = d.channel_of(o);
    const Lanes<W> xs = load_lanes<W>(x, o), gs = load_lanes<W>(dy, o);
    const Lanes<W> open = mask.relu_y ? load_lanes<W>(mask.relu_y, o) : Lanes<W>{};
    const Lanes<W> before = accumulate ? load_lanes<W>(dx, o) : Lanes<W>{};
    const float mask_beta = mask.beta_of(ch);
    Lanes<W> out;
    for (int i = 0; i < W; ++i) {
      const float g = mask.gradient(gs.v[i], open.v[i], xs.v[i], mean[ch], k[ch], mask_beta);
      const float v = k[ch] * (g - mean_dy[ch] - (xs.v[i] - mean[ch]) * slope[ch]);
      out.v[i] = accumulate ? before.v[i] + v : v;
    }
    store_lanes<W>(dx, o, out);
  });
}

template <class T>
void input_gradient(const BnDims& d, const T* x, const T* dy, ReluMask<T> mask, const float* mean,
                    const float* coefficients, bool accumulate, T* dx) {
  if (four_wide(d, x, dy, mask.relu_y, static_cast<const T*>(dx)))
    input_gradient_lanes<4>(d, x, dy, mask, mean, coefficients, accumulate, dx);
  else
    input_gradient_lanes<1>(d, x, dy, mask, mean, coefficients, accumulate, dx);
}

template <class T>
T* data_or_null(const Tensor& t) {
  return t.defined() ? t.as<T>() : nullptr;
}

}  // namespace psgd::cuda::bn
