// Batch normalisation on CUDA, PyTorch semantics, with the CPU twin's arithmetic: sums in double
// (shifted moments forward, as kernels/cpu/batch_norm.cpp), deterministic (a fixed summation
// order, no atomic sums), and spread over the whole GPU. One block per channel would leave most
// SMs idle at ResNet's 16-64 channels, so each channel's sums are split over several blocks, each
// over a contiguous run of images; the last of a channel's blocks to finish adds the splits in a
// fixed order and turns them into per-channel coefficients; the elementwise passes run over all
// elements at once. Where a channel fits one block's registers, one launch does it all
// (batch_norm_one_block.cuh). Activations (x, y, dy, dx, the ReLU's output) are float or bf16 (T);
// parameters and statistics float32.
#include <cmath>

#include "kernels/cuda/batch_norm_kernels.cuh"
#include "kernels/cuda/batch_norm_one_block.cuh"

namespace psgd::cuda {
namespace {

using namespace bn;

template <class T>
void forward_train_t(Context& ctx, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                     const Tensor& running_mean, const Tensor& running_var, ops::BatchNormParams p,
                     const Tensor& y, const Tensor& saved_mean, const Tensor& saved_invstd,
                     const Tensor& residual) {
  const BnDims d = dims_of(x);
  const Scratch s = scratch_for(ctx, d);
  const T* in = x.as<T>();
  const double m = static_cast<double>(d.count());
  const float* g = gamma.f32();
  float *rm = running_mean.f32(), *rv = running_var.f32();
  float *mu = saved_mean.f32(), *is = saved_invstd.f32(), *coefficients = s.coefficients;
  const auto fold = [=] __device__(int64_t ch, double2 total) {
    const double mean_shifted = total.x / m;
    const double mean = load(in, ch * d.hw) + mean_shifted;
    const double var = fmax(0.0, total.y / m - mean_shifted * mean_shifted);
    const float invstd = static_cast<float>(1.0 / sqrt(var + p.eps));
    mu[ch] = static_cast<float>(mean);
    is[ch] = invstd;
    coefficients[ch] = static_cast<float>(mean);
    coefficients[d.c + ch] = bn_math::training_scale(g[ch], invstd);
    rm[ch] = static_cast<float>((1.0 - p.momentum) * rm[ch] + p.momentum * mean);
    rv[ch] = static_cast<float>((1.0 - p.momentum) * rv[ch] + p.momentum * var * m / (m - 1.0));
  };
  const T* res = data_or_null<T>(residual);
  if (fits_one_block(d, kForwardValues))
    return channel_forward(d, in, coefficients, beta.f32(), res, p.relu, y.as<T>(), fold);
  launch_moments(d, in, nullptr, s.partials, fold);
  normalise(d, in, coefficients, beta.f32(), res, p.relu, y.as<T>());
}

template <class T>
void forward_eval_t(Context& ctx, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                    const Tensor& running_mean, const Tensor& running_var, ops::BatchNormParams p,
                    const Tensor& y, const Tensor& residual) {
  const BnDims d = dims_of(x);
  const float *g = gamma.f32(), *rm = running_mean.f32(), *rv = running_var.f32();
  float* coefficients = scratch_for(ctx, d).coefficients;
  for_each(d.c, [=] __device__(int64_t ch) {
    coefficients[ch] = rm[ch];
    coefficients[d.c + ch] = static_cast<float>(g[ch] / sqrt(static_cast<double>(rv[ch]) + p.eps));
  });
  normalise(d, x.as<T>(), coefficients, beta.f32(), data_or_null<T>(residual), p.relu, y.as<T>());
}

template <class T>
void backward_t(Context& ctx, const Tensor& x, const Tensor& dy, const Tensor& gamma,
                const Tensor& saved_mean, const Tensor& saved_invstd, const Tensor& dx,
                GradMode dx_mode, const Tensor& dgamma, const Tensor& dbeta,
                const ops::ReluMaskSource& relu) {
  const BnDims d = dims_of(x);
  const Scratch s = scratch_for(ctx, d);
  const T *in = x.as<T>(), *g = dy.as<T>();
  const ReluMask<T> mask{data_or_null<T>(relu.output), data_or_null<float>(relu.beta)};
  const float *mu = saved_mean.f32(), *is = saved_invstd.f32(), *ga = gamma.f32();
  const double m = static_cast<double>(d.count());
  float *dg = dgamma.f32(), *db = dbeta.f32(), *coefficients = s.coefficients;
  const auto fold = [=] __device__(int64_t ch, double2 total) {
    db[ch] = static_cast<float>(total.x);
    dg[ch] = static_cast<float>(total.y * is[ch]);
    // dx = gamma invstd (dy - mean(dy) - xhat mean(dy xhat)), xhat = (x - mean) invstd
    coefficients[ch] = bn_math::training_scale(ga[ch], is[ch]);
    coefficients[d.c + ch] = static_cast<float>(total.x / m);
    coefficients[2 * d.c + ch] = static_cast<float>(total.y / m * is[ch] * is[ch]);
  };
  const bool accumulate = dx_mode == GradMode::Accumulate;
  if (dx.defined() && fits_one_block(d, kBackwardValues))
    return channel_backward(d, in, g, mask, mu, ga, is, coefficients, accumulate, dx.as<T>(), fold);
  launch_gradient_sums(d, in, g, mask, mu, ga, is, s.partials, fold);
  if (dx.defined()) input_gradient(d, in, g, mask, mu, coefficients, accumulate, dx.as<T>());
}

}  // namespace

int64_t batch_norm_workspace_floats(const Shape& x) {
  check_input(x);
  size_t coefficients = 0;
  return scratch_layout(x[1], splits_for(x[0], x[1]), &coefficients).floats();
}

void batch_norm_forward_train(Context& ctx, const Tensor& x, const Tensor& gamma,
                              const Tensor& beta, const Tensor& running_mean,
                              const Tensor& running_var, ops::BatchNormParams p, const Tensor& y,
                              const Tensor& saved_mean, const Tensor& saved_invstd,
                              const Tensor& residual) {
  with_activation_type(x.dtype, [&](auto t) {
    forward_train_t<decltype(t)>(ctx, x, gamma, beta, running_mean, running_var, p, y, saved_mean,
                                 saved_invstd, residual);
  });
}

void batch_norm_forward_eval(Context& ctx, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                             const Tensor& running_mean, const Tensor& running_var,
                             ops::BatchNormParams p, const Tensor& y, const Tensor& residual) {
  with_activation_type(x.dtype, [&](auto t) {
    forward_eval_t<decltype(t)>(ctx, x, gamma, beta, running_mean, running_var, p, y, residual);
  });
}

void batch_norm_backward(Context& ctx, const Tensor& x, const Tensor& dy, const Tensor& gamma,
                         const Tensor& saved_mean, const Tensor& saved_invstd, const Tensor& dx,
                         GradMode dx_mode, const Tensor& dgamma, const Tensor& dbeta,
                         const ops::ReluMaskSource& relu) {
  with_activation_type(x.dtype, [&](auto t) {
    backward_t<decltype(t)>(ctx, x, dy, gamma, saved_mean, saved_invstd, dx, dx_mode, dgamma, dbeta,
                            relu);
  });
}

}  // namespace psgd::cuda
