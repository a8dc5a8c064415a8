// Batch normalisation of a channel by one block, where the channel's values fit in the block's
// registers: the sums, the per-channel coefficients and the elementwise pass in one launch, each
// value read once. The split reductions (batch_norm_kernels.cuh) take two launches and read the
// values twice; for ResNet-32 at batch 128 this serves stage 3 (8,192 values per channel) both
// ways, for VGG16-bn its layers of 256 and 512 channels. Sums in double in a fixed order (each
// thread's values in order, then block_sum), so results do not depend on timing; fold(ch, totals)
// is the split path's, on thread 0, and the coefficients it writes are read back after a barrier.
#pragma once

#include <algorithm>

#include "kernels/cuda/batch_norm_kernels.cuh"

namespace psgd::cuda::bn {

// Values per thread held in registers, at most: forward x; backward x and the gradient reaching
// BN. More spill at 1,024 threads (64 registers): with every load of a thread in flight at once,
// their addresses are live together. The forward kernel is compiled for 8 and 16, the fewer used
// where they hold the channel.
constexpr int kForwardValues = 16;
constexpr int kBackwardValues = 8;
constexpr int kChannelThreads = 1024;
constexpr int kFewValues = 8;

// Whether a channel of d fits one block with `values` per thread.
inline bool fits_one_block(const BnDims& d, int values) {
  return d.count() <= int64_t{kChannelThreads} * values;
}

// Threads for a channel: kFewValues each below a whole block's worth, in warps.
inline unsigned channel_threads(const BnDims& d) {
  const int64_t warps = (d.count() + kFewValues * 32 - 1) / (kFewValues * 32);
  return static_cast<unsigned>(std::clamp<int64_t>(warps, 2, kChannelThreads / 32) * 32);
}

// Element i of channel ch (i < d.count()): image i / hw, position i % hw.
__device__ inline int64_t channel_element(const BnDims& d, int64_t ch, uint32_t i) {
  const uint32_t image = d.hw_divisor.divide(i);
  return (image * d.c + ch) * d.hw + (i - image * d.hw);
}

// threadIdx.x as a value the compiler cannot see through: the offsets derived from it after a
// block's barrier are then computed again rather than held in registers across it, which spilled.
__device__ inline unsigned opaque_thread_index() {
  unsigned t = threadIdx.x;
  asm volatile("" : "+r"(t));
  return t;
}

// y = (x - shift) * scale + beta, plus the residual where given, then ReLU where asked, with the
// moments about the channel's first value folded into shift and scale. Every load of a loop is
// issued before its values are used (predicated, no early exit), so that they are all in flight.
template <int Values, class T, class Fold>
__global__ void __launch_bounds__(kChannelThreads)
    channel_forward_kernel(BnDims d, const T* x, const float* coefficients, const float* beta,
                           const T* residual, bool relu, T* y, Fold fold) {
  await_prior_grids();
  const int64_t ch = blockIdx.x;
  const uint32_t count = static_cast<uint32_t>(d.count());
  const auto index = [&](int k) { return threadIdx.x + k * blockDim.x; };
  float v[Values];
#pragma unroll
  for (int k = 0; k < Values; ++k)
    v[k] = index(k) < count ? load(x, channel_element(d, ch, index(k))) : 0.0f;
  const double centre = load(x, ch * d.hw);
  double a = 0.0, b = 0.0;
#pragma unroll
  for (int k = 0; k < Values; ++k) {
    if (index(k) >= count) continue;
    const double s = v[k] - centre;
    a += s;
    b += s * s;
  }
  a = block_sum(a);
  b = block_sum(b);
  if (threadIdx.x == 0) fold(ch, make_double2(a, b));
  __syncthreads();  // the coefficients are written
  const float shift = coefficients[ch], scale = coefficients[d.c + ch], bias = beta[ch];
  const unsigned thread = opaque_thread_index();
  const auto index_again = [&](int k) { return thread + k * blockDim.x; };
  // The residual in runs of kFewValues: its loads may not pass the stores to y (which it may
  // alias), so a run's loads go out together before the run's stores.
#pragma unroll
  for (int k0 = 0; k0 < Values; k0 += kFewValues) {
    float r[kFewValues];
#pragma unroll
    for (int k = k0; k < k0 + kFewValues; ++k) {
      const uint32_t i = index_again(k);
      r[k - k0] = residual && i < count ? load(residual, channel_element(d, ch, i)) : 0.0f;
    }
#pragma unroll
    for (int k = k0; k < k0 + kFewValues; ++k) {
      const uint32_t i = index_again(k);
      if (i >= count) continue;
      float out = bn_math::affine(v[k], shift, scale, bias);
      if (residual) out += r[k - k0];
      store(y, channel_element(d, ch, i), relu && !(out > 0.0f) ? 0.0f : out);
    }
  }
}

// dx = k (g - mean_dy - (x - mean) slope), g the gradient reaching BN's output (ReluMask), after
// the sums {g, g (x - mean)}.
template <int Values, class T, class Fold>
__global__ void __launch_bounds__(kChannelThreads)
    channel_backward_kernel(BnDims d, const T* x, const T* dy, ReluMask<T> mask, const float* mean,
                            const float* gamma, const float* invstd, const float* coefficients,
                            bool accumulate, T* dx, Fold fold) {
  await_prior_grids();
  const int64_t ch = blockIdx.x;
  const uint32_t count = static_cast<uint32_t>(d.count());
  const auto index = [&](int k) { return threadIdx.x + k * blockDim.x; };
  const float mu = mean[ch], mask_scale = mask.scale_of(gamma, invstd, ch),
              mask_beta = mask.beta_of(ch);
  float g[Values], centred[Values];
#pragma unroll
  for (int k = 0; k < Values; ++k) {
    const bool here = index(k) < count;
    const int64_t o = here ? channel_element(d, ch, index(k)) : 0;
    const float open = mask.relu_y && here ? load(mask.relu_y, o) : 1.0f;
    const float grad = here ? load(dy, o) : 0.0f;
    const float xv = here ? load(x, o) : mu;
    g[k] = mask.gradient(grad, open, xv, mu, mask_scale, mask_beta);
    centred[k] = xv - mu;
  }
  double a = 0.0, b = 0.0;
#pragma unroll
  for (int k = 0; k < Values; ++k) {
    a += g[k];
    b += static_cast<double>(g[k]) * centred[k];
  }
  a = block_sum(a);
  b = block_sum(b);
  if (threadIdx.x == 0) fold(ch, make_double2(a, b));
  __syncthreads();  // the coefficients are written
  const float scale = coefficients[ch], mean_dy = coefficients[d.c + ch],
              slope = coefficients[2 * d.c + ch];
  const unsigned thread = opaque_thread_index();
#pragma unroll
  for (int k = 0; k < Values; ++k) {
    const uint32_t i = thread + k * blockDim.x;
    if (i >= count) continue;
    const int64_t o = channel_element(d, ch, i);
    const float v = scale * (g[k] - mean_dy - centred[k] * slope);
    store(dx, o, accumulate ? load(dx, o) + v : v);
  }
}

template <class T, class Fold>
void channel_forward(const BnDims& d, const T* x, const float* coefficients, const float* beta,
                     const T* residual, bool relu, T* y, Fold fold) {
  PSGD_CHECK(fits_one_block(d, kForwardValues), "batch norm: ", d.count(),
             " values per channel do not fit one block");
  const auto blocks = static_cast<unsigned>(d.c);
  const unsigned threads = channel_threads(d);
  if (fits_one_block(d, kFewValues)) {
    PSGD_LAUNCH((channel_forward_kernel<kFewValues, T, Fold>), blocks, threads)
    (d, x, coefficients, beta, residual, relu, y, fold);
  } else {
    PSGD_LAUNCH((channel_forward_kernel<kForwardValues, T, Fold>), blocks, threads)
    (d, x, coefficients, beta, residual, relu, y, fold);
  }
  CUDA_CHECK_LAUNCH();
}

template <class T, class Fold>
void channel_backward(const BnDims& d, const T* x, const T* dy, ReluMask<T> mask, const float* mean,
                      const float* gamma, const float* invstd, const float* coefficients,
                      bool accumulate, T* dx, Fold fold) {
  PSGD_CHECK(fits_one_block(d, kBackwardValues), "batch norm: ", d.count(),
             " values per channel do not fit one block");
  PSGD_LAUNCH((channel_backward_kernel<kBackwardValues, T, Fold>), static_cast<unsigned>(d.c),
              channel_threads(d))
  (d, x, dy, mask, mean, gamma, invstd, coefficients, accumulate, dx, fold);
  CUDA_CHECK_LAUNCH();
}

}  // namespace psgd::cuda::bn
