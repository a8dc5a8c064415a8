// Batch normalisation on CUDA, PyTorch semantics: one block per channel, sums in double in a
// fixed order (deterministic), as the CPU twin. Activations (x, y, dy, dx, relu_y) are float or
// bf16 (T); parameters and statistics float32.
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

template <class T>
__global__ void forward_train_kernel(BnDims d, const T* x, const float* gamma, const float* beta,
                                     float* running_mean, float* running_var,
                                     ops::BatchNormParams p, T* y, float* saved_mean,
                                     float* saved_invstd) {
  const int64_t ch = blockIdx.x;
  const double m = static_cast<double>(d.count());
  double sum = 0.0;
  for (int64_t i = threadIdx.x; i < d.count(); i += blockDim.x) sum += load(x, d.at(ch, i));
  const double mean = block_sum(sum) / m;
  double squares = 0.0;
  for (int64_t i = threadIdx.x; i < d.count(); i += blockDim.x) {
    const double v = load(x, d.at(ch, i)) - mean;
    squares += v * v;
  }
  const double var = block_sum(squares) / m;
  const double invstd = 1.0 / sqrt(var + p.eps);
  const float mean_f = static_cast<float>(mean);
  const float scale = static_cast<float>(gamma[ch] * invstd);
  for (int64_t i = threadIdx.x; i < d.count(); i += blockDim.x) {
    const int64_t o = d.at(ch, i);
    const float v = (load(x, o) - mean_f) * scale + beta[ch];
    store(y, o, p.relu && !(v > 0.0f) ? 0.0f : v);
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

template <class T>
__global__ void backward_kernel(BnDims d, const T* x, const T* dy, const float* gamma,
                                const float* saved_mean, const float* saved_invstd, T* dx,
                                bool accumulate, float* dgamma, float* dbeta, double* sums,
                                const T* relu_y) {
  const int64_t ch = blockIdx.x;
  const float mean = saved_mean[ch], invstd = saved_invstd[ch];
  double sum_dy = 0.0, sum_dy_xc = 0.0;
  // With a fused ReLU, the gradient reaching BN's output is dy where the ReLU's output is open.
  const auto g_at = [&](int64_t o) {
    return relu_y && !(load(relu_y, o) > 0.0f) ? 0.0f : load(dy, o);
  };
  for (int64_t i = threadIdx.x; i < d.count(); i += blockDim.x) {
    const int64_t o = d.at(ch, i);
    const float g = g_at(o);
    sum_dy += g;
    sum_dy_xc += static_cast<double>(g) * (load(x, o) - mean);
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
    const float g = k * (g_at(o) - mean_dy - (load(x, o) - mean) * slope);
    store(dx, o, accumulate ? load(dx, o) + g : g);
  }
}

// Sum and sum of squares of (x - shift) over one channel per block (synchronised BN).
template <class T>
__global__ void moments_kernel(BnDims d, const T* x, const float* shift, double* moments) {
  const int64_t ch = blockIdx.x;
  const double centre = shift[ch];
  double sum = 0.0, squares = 0.0;
  for (int64_t i = threadIdx.x; i < d.count(); i += blockDim.x) {
    const double v = load(x, d.at(ch, i)) - centre;
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

// t's elements, or null where the optional tensor t is undefined.
template <class T>
T* data_or_null(const Tensor& t) {
  return t.defined() ? t.as<T>() : nullptr;
}

template <class T>
void forward_eval_t(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                    const Tensor& running_mean, const Tensor& running_var, ops::BatchNormParams p,
                    const Tensor& y) {
  const BnDims d = dims_of(x);
  const T* in = x.as<T>();
  const float *g = gamma.f32(), *b = beta.f32();
  const float *rm = running_mean.f32(), *rv = running_var.f32();
  T* out = y.as<T>();
  for_each(x.numel(), [=] __device__(int64_t o) {
    const int64_t ch = o / d.hw % d.c;
    const float scale = static_cast<float>(g[ch] / sqrt(static_cast<double>(rv[ch]) + p.eps));
    const float v = (load(in, o) - rm[ch]) * scale + b[ch];
    store(out, o, p.relu && !(v > 0.0f) ? 0.0f : v);
  });
}

}  // namespace

void batch_norm_forward_train(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                              const Tensor& running_mean, const Tensor& running_var,
                              ops::BatchNormParams p, const Tensor& y, const Tensor& saved_mean,
                              const Tensor& saved_invstd) {
  const BnDims d = dims_of(x);
  with_activation_type(x.dtype, [&](auto t) {
    using T = decltype(t);
    forward_train_kernel<<<static_cast<unsigned>(d.c), kThreads>>>(
        d, x.as<T>(), gamma.f32(), beta.f32(), running_mean.f32(), running_var.f32(), p, y.as<T>(),
        saved_mean.f32(), saved_invstd.f32());
  });
  CUDA_CHECK_LAUNCH();
}

void batch_norm_forward_eval(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                             const Tensor& running_mean, const Tensor& running_var,
                             ops::BatchNormParams p, const Tensor& y) {
  with_activation_type(x.dtype, [&](auto t) {
    forward_eval_t<decltype(t)>(x, gamma, beta, running_mean, running_var, p, y);
  });
}

void batch_norm_backward(const Tensor& x, const Tensor& dy, const Tensor& gamma,
                         const Tensor& saved_mean, const Tensor& saved_invstd, const Tensor& dx,
                         GradMode dx_mode, const Tensor& dgamma, const Tensor& dbeta,
                         const Tensor& relu_y) {
  const BnDims d = dims_of(x);
  with_activation_type(x.dtype, [&](auto t) {
    using T = decltype(t);
    backward_kernel<<<static_cast<unsigned>(d.c), kThreads>>>(
        d, x.as<T>(), dy.as<T>(), gamma.f32(), saved_mean.f32(), saved_invstd.f32(),
        data_or_null<T>(dx), dx_mode == GradMode::Accumulate, dgamma.f32(), dbeta.f32(), nullptr,
        data_or_null<T>(relu_y));
  });
  CUDA_CHECK_LAUNCH();
}

}  // namespace psgd::cuda

// ---- Stages of synchronised BN ------------------------------------------------------------------
namespace psgd::cuda {
namespace {

template <class T>
void normalize_t(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& mean,
                 const Tensor& invstd, const Tensor& y) {
  const BnDims d = dims_of(x);
  const T* in = x.as<T>();
  const float *g = gamma.f32(), *b = beta.f32(), *mu = mean.f32(), *is = invstd.f32();
  T* out = y.as<T>();
  for_each(x.numel(), [=] __device__(int64_t o) {
    const int64_t ch = o / d.hw % d.c;
    store(out, o, (load(in, o) - mu[ch]) * (g[ch] * is[ch]) + b[ch]);
  });
}

template <class T>
void backward_input_t(const Tensor& x, const Tensor& dy, const Tensor& gamma, const Tensor& mean,
                      const Tensor& invstd, const Tensor& sums, int64_t count, const Tensor& dx,
                      GradMode dx_mode) {
  const BnDims d = dims_of(x);
  const T *in = x.as<T>(), *g = dy.as<T>();
  const float *ga = gamma.f32(), *mu = mean.f32(), *is = invstd.f32();
  const double* su = sums.f64();
  T* out = dx.as<T>();
  const double m = static_cast<double>(count);
  const bool accumulate = dx_mode == GradMode::Accumulate;
  for_each(x.numel(), [=] __device__(int64_t o) {
    const int64_t ch = o / d.hw % d.c;
    const float k = ga[ch] * is[ch];
    const float mean_dy = static_cast<float>(su[ch] / m);
    const float slope = static_cast<float>(su[d.c + ch] / m * is[ch]);
    const float v = k * (load(g, o) - mean_dy - (load(in, o) - mu[ch]) * slope);
    store(out, o, accumulate ? load(out, o) + v : v);
  });
}

}  // namespace

void batch_norm_moments(const Tensor& x, const Tensor& shift, const Tensor& moments) {
  const BnDims d = dims_of(x);
  with_activation_type(x.dtype, [&](auto t) {
    moments_kernel<<<static_cast<unsigned>(d.c), kThreads>>>(d, x.as<decltype(t)>(), shift.f32(),
                                                             moments.f64());
  });
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
  with_activation_type(x.dtype,
                       [&](auto t) { normalize_t<decltype(t)>(x, gamma, beta, mean, invstd, y); });
}

void batch_norm_backward_reduce(const Tensor& x, const Tensor& dy, const Tensor& mean,
                                const Tensor& invstd, const Tensor& sums, const Tensor& dgamma,
                                const Tensor& dbeta) {
  const BnDims d = dims_of(x);
  with_activation_type(x.dtype, [&](auto t) {
    using T = decltype(t);
    backward_kernel<T><<<static_cast<unsigned>(d.c), kThreads>>>(
        d, x.as<T>(), dy.as<T>(), nullptr, mean.f32(), invstd.f32(), nullptr, false, dgamma.f32(),
        dbeta.f32(), sums.f64(), nullptr);
  });
  CUDA_CHECK_LAUNCH();
}

void batch_norm_backward_input(const Tensor& x, const Tensor& dy, const Tensor& gamma,
                               const Tensor& mean, const Tensor& invstd, const Tensor& sums,
                               int64_t count, const Tensor& dx, GradMode dx_mode) {
  with_activation_type(x.dtype, [&](auto t) {
    backward_input_t<decltype(t)>(x, dy, gamma, mean, invstd, sums, count, dx, dx_mode);
  });
}

}  // namespace psgd::cuda
