// Batch normalisation on CUDA, PyTorch semantics: one block per channel, sums in double in a
// fixed order (deterministic), as the CPU twin.
#include <cmath>

#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/reduce.h"

namespace psgd::cuda {
namespace {

struct BnDims {
  int64_t n, c, hw;
  __host__ __device__ int64_t count() const { return n * hw; }
  // The offset of the i-th element (over N and the spatial positions) of channel ch.
  __device__ int64_t at(int64_t ch, int64_t i) const { return (i / hw * c + ch) * hw + i % hw; }
};

BnDims dims_of(const Tensor& x) {
  return {x.shape[0], x.shape[1], x.shape.rank() == 4 ? x.shape[2] * x.shape[3] : 1};
}

__global__ void forward_train_kernel(BnDims d, const float* x, const float* gamma,
                                     const float* beta, float* running_mean, float* running_var,
                                     ops::BatchNormParams p, float* y, float* saved_mean,
                                     float* saved_invstd) {
  const int64_t ch = blockIdx.x;
  const double m = static_cast<double>(d.count());
  double sum = 0.0;
  for (int64_t i = threadIdx.x; i < d.count(); i += blockDim.x) sum += x[d.at(ch, i)];
  const double mean = block_sum(sum) / m;
  double squares = 0.0;
  for (int64_t i = threadIdx.x; i < d.count(); i += blockDim.x) {
    const double v = x[d.at(ch, i)] - mean;
    squares += v * v;
  }
  const double var = block_sum(squares) / m;
  const double invstd = 1.0 / sqrt(var + p.eps);
  const float mean_f = static_cast<float>(mean);
  const float scale = static_cast<float>(gamma[ch] * invstd);
  for (int64_t i = threadIdx.x; i < d.count(); i += blockDim.x) {
    const int64_t o = d.at(ch, i);
    const float v = (x[o] - mean_f) * scale + beta[ch];
    y[o] = p.relu && !(v > 0.0f) ? 0.0f : v;
  }
  if (threadIdx.x == 0) {
    saved_mean[ch] = mean_f;
    saved_invstd[ch] = static_cast<float>(invstd);
    running_mean[ch] =
        static_cast<float>((1.0 - p.momentum) * running_mean[ch] + p.momentum * mean);
    running_var[ch] =
        static_cast<float>((1.0 - p.momentum) * running_var[ch] + p.momentum * var * m / (m - 1.0));
  }
}

__global__ void backward_kernel(BnDims d, const float* x, const float* dy, const float* gamma,
                                const float* saved_mean, const float* saved_invstd, float* dx,
                                bool accumulate, float* dgamma, float* dbeta, double* sums,
                                const float* relu_y) {
  const int64_t ch = blockIdx.x;
  const float mean = saved_mean[ch], invstd = saved_invstd[ch];
  double sum_dy = 0.0, sum_dy_xc = 0.0;
  // With a fused ReLU, the gradient reaching BN's output is dy where the ReLU's output is open.
  const auto g_at = [&](int64_t o) { return relu_y && !(relu_y[o] > 0.0f) ? 0.0f : dy[o]; };
  for (int64_t i = threadIdx.x; i < d.count(); i += blockDim.x) {
    const int64_t o = d.at(ch, i);
    const float g = g_at(o);
    sum_dy += g;
    sum_dy_xc += static_cast<double>(g) * (x[o] - mean);
  }
  sum_dy = block_sum(sum_dy);
  sum_dy_xc = block_sum(sum_dy_xc);
  if (threadIdx.x == 0) {
    dbeta[ch] = static_cast<float>(sum_dy);
    dgamma[ch] = static_cast<float>(sum_dy_xc * invstd);
    if (sums) {  // synchronised BN: the sums to exchange between ranks
      sums[ch] = sum_dy;
      sums[d.c + ch] = sum_dy_xc * invstd;
    }
  }
  if (!dx) return;
  const double m = static_cast<double>(d.count());
  const float k = static_cast<float>(gamma[ch] * invstd);
  const float mean_dy = static_cast<float>(sum_dy / m);
  const float slope = static_cast<float>(sum_dy_xc / m * invstd * invstd);
  for (int64_t i = threadIdx.x; i < d.count(); i += blockDim.x) {
    const int64_t o = d.at(ch, i);
    const float g = k * (g_at(o) - mean_dy - (x[o] - mean) * slope);
    dx[o] = accumulate ? dx[o] + g : g;
  }
}

// Sum and sum of squares of (x - shift) over one channel per block (synchronised BN).
__global__ void moments_kernel(BnDims d, const float* x, const float* shift, double* moments) {
  const int64_t ch = blockIdx.x;
  const double centre = shift[ch];
  double sum = 0.0, squares = 0.0;
  for (int64_t i = threadIdx.x; i < d.count(); i += blockDim.x) {
    const double v = x[d.at(ch, i)] - centre;
    sum += v;
    squares += v * v;
  }
  sum = block_sum(sum);
  squares = block_sum(squares);
  if (threadIdx.x == 0) {
    moments[ch] = sum;
    moments[d.c + ch] = squares;
  }
}

}  // namespace

void batch_norm_forward_train(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                              const Tensor& running_mean, const Tensor& running_var,
                              ops::BatchNormParams p, const Tensor& y, const Tensor& saved_mean,
                              const Tensor& saved_invstd) {
  const BnDims d = dims_of(x);
  forward_train_kernel<<<static_cast<unsigned>(d.c), kThreads>>>(
      d, x.f32(), gamma.f32(), beta.f32(), running_mean.f32(), running_var.f32(), p, y.f32(),
      saved_mean.f32(), saved_invstd.f32());
  CUDA_CHECK_LAUNCH();
}

void batch_norm_forward_eval(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                             const Tensor& running_mean, const Tensor& running_var,
                             ops::BatchNormParams p, const Tensor& y) {
  const BnDims d = dims_of(x);
  const float *in = x.f32(), *g = gamma.f32(), *b = beta.f32();
  const float *rm = running_mean.f32(), *rv = running_var.f32();
  float* out = y.f32();
  for_each(x.numel(), [=] __device__(int64_t o) {
    const int64_t ch = o / d.hw % d.c;
    const float scale = static_cast<float>(g[ch] / sqrt(static_cast<double>(rv[ch]) + p.eps));
    const float v = (in[o] - rm[ch]) * scale + b[ch];
    out[o] = p.relu && !(v > 0.0f) ? 0.0f : v;
  });
}

void batch_norm_backward(const Tensor& x, const Tensor& dy, const Tensor& gamma,
                         const Tensor& saved_mean, const Tensor& saved_invstd, const Tensor& dx,
                         GradMode dx_mode, const Tensor& dgamma, const Tensor& dbeta,
                         const Tensor& relu_y) {
  const BnDims d = dims_of(x);
  backward_kernel<<<static_cast<unsigned>(d.c), kThreads>>>(
      d, x.f32(), dy.f32(), gamma.f32(), saved_mean.f32(), saved_invstd.f32(),
      dx.defined() ? dx.f32() : nullptr, dx_mode == GradMode::Accumulate, dgamma.f32(), dbeta.f32(),
      nullptr, relu_y.defined() ? relu_y.f32() : nullptr);
  CUDA_CHECK_LAUNCH();
}

}  // namespace psgd::cuda

// ---- Stages of synchronised BN ------------------------------------------------------------------
namespace psgd::cuda {

void batch_norm_moments(const Tensor& x, const Tensor& shift, const Tensor& moments) {
  const BnDims d = dims_of(x);
  moments_kernel<<<static_cast<unsigned>(d.c), kThreads>>>(d, x.f32(), shift.f32(), moments.f64());
  CUDA_CHECK_LAUNCH();
}

void batch_norm_stats(const Tensor& shift, const Tensor& moments, int64_t count,
                      ops::BatchNormParams p, const Tensor& running_mean, const Tensor& running_var,
                      const Tensor& mean, const Tensor& invstd) {
  const int64_t channels = shift.numel();
  const double m = static_cast<double>(count);
  const float* s = shift.f32();
  const double* mo = moments.f64();
  float *rm = running_mean.f32(), *rv = running_var.f32(), *mu = mean.f32(), *is = invstd.f32();
  for_each(channels, [=] __device__(int64_t c) {
    const double mean_shifted = mo[c] / m;
    const double batch_mean = s[c] + mean_shifted;  // read before running_mean moves
    const double var = fmax(0.0, mo[channels + c] / m - mean_shifted * mean_shifted);
    mu[c] = static_cast<float>(batch_mean);
    is[c] = static_cast<float>(1.0 / sqrt(var + p.eps));
    rm[c] = static_cast<float>((1.0 - p.momentum) * rm[c] + p.momentum * batch_mean);
    rv[c] = static_cast<float>((1.0 - p.momentum) * rv[c] + p.momentum * var * m / (m - 1.0));
  });
}

void batch_norm_normalize(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                          const Tensor& mean, const Tensor& invstd, const Tensor& y) {
  const BnDims d = dims_of(x);
  const float *in = x.f32(), *g = gamma.f32(), *b = beta.f32(), *mu = mean.f32(),
              *is = invstd.f32();
  float* out = y.f32();
  for_each(x.numel(), [=] __device__(int64_t o) {
    const int64_t ch = o / d.hw % d.c;
    out[o] = (in[o] - mu[ch]) * (g[ch] * is[ch]) + b[ch];
  });
}

void batch_norm_backward_reduce(const Tensor& x, const Tensor& dy, const Tensor& mean,
                                const Tensor& invstd, const Tensor& sums, const Tensor& dgamma,
                                const Tensor& dbeta) {
  const BnDims d = dims_of(x);
  backward_kernel<<<static_cast<unsigned>(d.c), kThreads>>>(
      d, x.f32(), dy.f32(), nullptr, mean.f32(), invstd.f32(), nullptr, false, dgamma.f32(),
      dbeta.f32(), sums.f64(), nullptr);
  CUDA_CHECK_LAUNCH();
}

void batch_norm_backward_input(const Tensor& x, const Tensor& dy, const Tensor& gamma,
                               const Tensor& mean, const Tensor& invstd, const Tensor& sums,
                               int64_t count, const Tensor& dx, GradMode dx_mode) {
  const BnDims d = dims_of(x);
  const float *in = x.f32(), *g = dy.f32(), *ga = gamma.f32(), *mu = mean.f32(), *is = invstd.f32();
  const double* su = sums.f64();
  float* out = dx.f32();
  const double m = static_cast<double>(count);
  const bool accumulate = dx_mode == GradMode::Accumulate;
  for_each(x.numel(), [=] __device__(int64_t o) {
    const int64_t ch = o / d.hw % d.c;
    const float k = ga[ch] * is[ch];
    const float mean_dy = static_cast<float>(su[ch] / m);
    const float slope = static_cast<float>(su[d.c + ch] / m * is[ch]);
    const float v = k * (g[o] - mean_dy - (in[o] - mu[ch]) * slope);
    out[o] = accumulate ? out[o] + v : v;
  });
}

}  // namespace psgd::cuda
