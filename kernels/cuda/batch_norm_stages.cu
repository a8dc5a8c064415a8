// The stages of synchronised batch normalisation on CUDA (kernels/ops.h): the sums each rank
// contributes, the statistics from the sums over all ranks, and the elementwise passes, with the
// split reductions of batch_norm_kernels.cuh.
#include <cmath>

#include "kernels/cuda/batch_norm_kernels.cuh"

namespace psgd::cuda {
namespace {

using namespace bn;

}  // namespace

void batch_norm_moments(Context& ctx, const Tensor& x, const Tensor& shift, const Tensor& moments) {
  const BnDims d = dims_of(x);
  const Scratch s = scratch_for(ctx, d);
  double* out = moments.f64();  // (2, C): the channels' totals, {a} then {b}
  const auto fold = [=] __device__(int64_t ch, double2 total) {
    out[ch] = total.x;
    out[d.c + ch] = total.y;
  };
  with_activation_type(x.dtype, [&](auto t) {
    launch_moments(d, x.as<decltype(t)>(), shift.f32(), s.partials, fold);
  });
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

void batch_norm_normalize(Context& ctx, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                          const Tensor& mean, const Tensor& invstd, const Tensor& y) {
  const BnDims d = dims_of(x);
  const float *g = gamma.f32(), *mu = mean.f32(), *is = invstd.f32();
  float* coefficients = scratch_for(ctx, d).coefficients;
  for_each(d.c, [=] __device__(int64_t ch) {
    coefficients[ch] = mu[ch];
    coefficients[d.c + ch] = bn_math::training_scale(g[ch], is[ch]);
  });
  with_activation_type(x.dtype, [&](auto t) {
    using T = decltype(t);
    normalise(d, x.as<T>(), coefficients, beta.f32(), static_cast<const T*>(nullptr), false,
              y.as<T>());
  });
}

void batch_norm_backward_reduce(Context& ctx, const Tensor& x, const Tensor& dy, const Tensor& mean,
                                const Tensor& invstd, const Tensor& sums, const Tensor& dgamma,
                                const Tensor& dbeta) {
  const BnDims d = dims_of(x);
  const Scratch s = scratch_for(ctx, d);
  const float* is = invstd.f32();
  double* su = sums.f64();
  float *dg = dgamma.f32(), *db = dbeta.f32();
  const auto fold = [=] __device__(int64_t ch, double2 total) {
    const double sum_dy_xhat = total.y * is[ch];
    su[ch] = total.x;
    su[d.c + ch] = sum_dy_xhat;
    db[ch] = static_cast<float>(total.x);
    dg[ch] = static_cast<float>(sum_dy_xhat);
  };
  with_activation_type(x.dtype, [&](auto t) {
    using T = decltype(t);
    launch_gradient_sums(d, x.as<T>(), dy.as<T>(), ReluMask<T>{}, mean.f32(), nullptr, nullptr,
                         s.partials, fold);
  });
}

void batch_norm_backward_input(Context& ctx, const Tensor& x, const Tensor& dy, const Tensor& gamma,
                               const Tensor& mean, const Tensor& invstd, const Tensor& sums,
                               int64_t count, const Tensor& dx, GradMode dx_mode) {
  const BnDims d = dims_of(x);
  const float *ga = gamma.f32(), *is = invstd.f32();
  const double* su = sums.f64();
  const double m = static_cast<double>(count);
  float* coefficients = scratch_for(ctx, d).coefficients;
  // dx = gamma invstd (dy - sum(dy) / m - xhat sum(dy xhat) / m), over the whole global batch
  for_each(d.c, [=] __device__(int64_t ch) {
    coefficients[ch] = bn_math::training_scale(ga[ch], is[ch]);
    coefficients[d.c + ch] = static_cast<float>(su[ch] / m);
    coefficients[2 * d.c + ch] = static_cast<float>(su[d.c + ch] / m * is[ch]);
  });
  with_activation_type(x.dtype, [&](auto t) {
    using T = decltype(t);
    input_gradient(d, x.as<T>(), dy.as<T>(), ReluMask<T>{}, mean.f32(), coefficients,
                   dx_mode == GradMode::Accumulate, dx.as<T>());
  });
}

}  // namespace psgd::cuda
