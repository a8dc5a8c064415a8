// Batch normalisation on the CPU, PyTorch semantics. One thread per channel; sums in double so
// that the statistics of large batches do not lose precision.
#include <cmath>
#include <cstring>

#include "kernels/cpu/cpu_ops.h"

namespace psgd::cpu {
namespace {

// x is (N, C, H, W) or (N, C): the statistics run over N and the spatial positions.
struct BnDims {
  int64_t n, c, hw;
  int64_t count() const { return n * hw; }
};

BnDims dims_of(const Tensor& x) {
  return {x.shape[0], x.shape[1], x.shape.rank() == 4 ? x.shape[2] * x.shape[3] : 1};
}

template <class F>
void for_each_in_channel(const BnDims& d, int64_t c, const float* base, F&& f) {
  for (int64_t n = 0; n < d.n; ++n) {
    const float* plane = base + (n * d.c + c) * d.hw;
    for (int64_t i = 0; i < d.hw; ++i) f(n, i, plane[i]);
  }
}

// y = (x - mean) * scale + beta over one channel: subtracting first keeps the precision of
// inputs whose mean is large against their spread.
void normalise_channel(const BnDims& d, int64_t c, const float* x, float mean, float scale,
                       float beta, float* y) {
  for (int64_t n = 0; n < d.n; ++n) {
    const int64_t off = (n * d.c + c) * d.hw;
    for (int64_t i = 0; i < d.hw; ++i) y[off + i] = (x[off + i] - mean) * scale + beta;
  }
}

}  // namespace

void batch_norm_forward_train(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                              const Tensor& running_mean, const Tensor& running_var,
                              ops::BatchNormParams p, const Tensor& y, const Tensor& saved_mean,
                              const Tensor& saved_invstd) {
  const BnDims d = dims_of(x);
  const float* xp = x.f32();
  const double m = static_cast<double>(d.count());
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < d.c; ++c) {
    double sum = 0.0;
    for_each_in_channel(d, c, xp, [&](int64_t, int64_t, float v) { sum += v; });
    const double mean = sum / m;
    double sq = 0.0;
    for_each_in_channel(d, c, xp, [&](int64_t, int64_t, float v) { sq += (v - mean) * (v - mean); });
    const double var = sq / m;
    const double invstd = 1.0 / std::sqrt(var + p.eps);
    saved_mean.f32()[c] = static_cast<float>(mean);
    saved_invstd.f32()[c] = static_cast<float>(invstd);
    normalise_channel(d, c, xp, static_cast<float>(mean),
                      static_cast<float>(gamma.f32()[c] * invstd), beta.f32()[c], y.f32());
    float& rm = running_mean.f32()[c];
    float& rv = running_var.f32()[c];
    rm = static_cast<float>((1.0 - p.momentum) * rm + p.momentum * mean);
    rv = static_cast<float>((1.0 - p.momentum) * rv + p.momentum * var * m / (m - 1.0));
  }
}

void batch_norm_forward_eval(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                             const Tensor& running_mean, const Tensor& running_var,
                             ops::BatchNormParams p, const Tensor& y) {
  const BnDims d = dims_of(x);
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < d.c; ++c) {
    const double var = running_var.f32()[c];
    normalise_channel(d, c, x.f32(), running_mean.f32()[c],
                      static_cast<float>(gamma.f32()[c] / std::sqrt(var + p.eps)), beta.f32()[c],
                      y.f32());
  }
}

void batch_norm_backward(const Tensor& x, const Tensor& dy, const Tensor& gamma,
                         const Tensor& saved_mean, const Tensor& saved_invstd, const Tensor& dx,
                         GradMode dx_mode, const Tensor& dgamma, const Tensor& dbeta) {
  const BnDims d = dims_of(x);
  const float* xp = x.f32();
  const float* dyp = dy.f32();
  const double m = static_cast<double>(d.count());
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < d.c; ++c) {
    const double mean = saved_mean.f32()[c], invstd = saved_invstd.f32()[c];
    double sum_dy = 0.0, sum_dy_xhat = 0.0;
    for_each_in_channel(d, c, xp, [&](int64_t n, int64_t i, float v) {
      const double g = dyp[(n * d.c + c) * d.hw + i];
      sum_dy += g;
      sum_dy_xhat += g * (v - mean) * invstd;
    });
    dbeta.f32()[c] = static_cast<float>(sum_dy);
    dgamma.f32()[c] = static_cast<float>(sum_dy_xhat);
    if (!dx.defined()) continue;
    // dx = gamma * invstd * (dy - mean(dy) - xhat * mean(dy * xhat))
    const double k = gamma.f32()[c] * invstd, mean_dy = sum_dy / m, mean_dy_xhat = sum_dy_xhat / m;
    float* dxp = dx.f32();
    for_each_in_channel(d, c, xp, [&](int64_t n, int64_t i, float v) {
      const int64_t off = (n * d.c + c) * d.hw + i;
      const double xhat = (v - mean) * invstd;
      const float g = static_cast<float>(k * (dyp[off] - mean_dy - xhat * mean_dy_xhat));
      dxp[off] = dx_mode == GradMode::Accumulate ? dxp[off] + g : g;
    });
  }
}

}  // namespace psgd::cpu
