// Batch normalisation on the CPU, PyTorch semantics, for float32 and bf16 activations (T). One
// thread per channel; sums in double so that the statistics of large batches do not lose
// precision. Loops run over restrict-qualified plane pointers so that they vectorise.
#include <algorithm>
#include <cmath>
#include <type_traits>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/streaming_store.h"

namespace psgd::cpu {
namespace {

// x is (N, C, H, W) or (N, C): the statistics run over N and the spatial positions.
struct BnDims {
  int64_t n, c, hw;
  int64_t count() const { return n * hw; }
  int64_t plane(int64_t image, int64_t channel) const { return (image * c + channel) * hw; }
};

BnDims dims_of(const Tensor& x) {
  return {x.shape[0], x.shape[1], x.shape.rank() == 4 ? x.shape[2] * x.shape[3] : 1};
}

// Sum and sum of squared deviations from `centre` over one channel: one pass, in double.
template <class T>
void channel_moments(const BnDims& d, int64_t c, const T* __restrict x, double centre, double& sum,
                     double& squares) {
  sum = 0.0;
  squares = 0.0;
  for (int64_t n = 0; n < d.n; ++n) {
    const T* __restrict p = x + d.plane(n, c);
#pragma omp simd reduction(+ : sum, squares)
    for (int64_t i = 0; i < d.hw; ++i) {
      const double v = load(p, i) - centre;
      sum += v;
      squares += v * v;
    }
  }
}

// The gradient reaching BN's output: dy, or with a fused ReLU dy where its output is open (the
// select of the separate ReLU backward, so the results are the same to the bit).
template <bool kRelu, class T>
inline float output_gradient(const T* __restrict dy, const T* __restrict relu_y, int64_t i) {
  if constexpr (kRelu)
    return load(relu_y, i) > 0.0f ? load(dy, i) : 0.0f;
  else
    return load(dy, i);
}

// Sum of dy and of dy * (x - mean) over one channel, in double.
template <bool kRelu, class T>
void channel_gradient_sums(const BnDims& d, int64_t c, const T* __restrict x,
                           const T* __restrict dy, const T* __restrict relu_y, float mean,
                           double& sum_dy, double& sum_dy_xc) {
  sum_dy = 0.0;
  sum_dy_xc = 0.0;
  for (int64_t n = 0; n < d.n; ++n) {
    const int64_t off = d.plane(n, c);
    const T* __restrict xp = x + off;
#pragma omp simd reduction(+ : sum_dy, sum_dy_xc)
    for (int64_t i = 0; i < d.hw; ++i) {
      const float g = output_gradient<kRelu>(dy + off, kRelu ? relu_y + off : nullptr, i);
      sum_dy += g;
      sum_dy_xc += static_cast<double>(g) * (load(xp, i) - mean);
    }
  }
}

template <class T>
void channel_gradient_sums(const BnDims& d, int64_t c, const T* x, const T* dy, const T* relu_y,
                           float mean, double& sum_dy, double& sum_dy_xc) {
  if (relu_y)
    channel_gradient_sums<true>(d, c, x, dy, relu_y, mean, sum_dy, sum_dy_xc);
  else
    channel_gradient_sums<false, T>(d, c, x, dy, nullptr, mean, sum_dy, sum_dy_xc);
}

// y = (x - mean) * scale + beta over `count` elements, plus the residual where given, then ReLU
// where fused: subtracting first keeps the precision of inputs whose mean is large against their
// spread.
template <bool kRelu, bool kResidual, class T>
void normalise_run(int64_t count, const T* __restrict x, float mean, float scale, float beta,
                   const T* __restrict residual, T* __restrict y) {
#pragma omp simd
  for (int64_t i = 0; i < count; ++i) {
    float v = (load(x, i) - mean) * scale + beta;
    if constexpr (kResidual) v += load(residual, i);
    store(y, i, kRelu ? (v > 0.0f ? v : 0.0f) : v);
  }
}

// The elements a normalisation computes into cache before streaming them out, and the least plane
// it streams: streaming stores pay on whole cache lines, and the parts of a plane short of a
// whole vector are written the ordinary way.
constexpr int64_t kStreamChunk = 1024;
constexpr int64_t kStreamMinBytes = 256;

// normalise_run over one channel's planes. Each chunk is computed by the same code into a buffer
// in cache, then written past the caches (kernels/cpu/streaming_store.h): BN's output buffer is
// cold when BN writes it, and an ordinary store would first read it from memory. The output's
// reader (a convolution, the residual join, a pool) then finds it in memory, not in cache: the
// convolutions lose nothing, the joins some. ResNet-32 at batch 128, in a step: a stage-1 BN +
// ReLU forward 1.14-1.20 -> 0.85-0.90 ms; see BENCHMARKS.md for the whole step.
template <bool kRelu, bool kResidual, class T>
void normalise_channel(const BnDims& d, int64_t c, const T* x, float mean, float scale, float beta,
                       const T* residual, T* y) {
  const bool stream = kStreamingStores && d.hw * static_cast<int64_t>(sizeof(T)) >= kStreamMinBytes;
  alignas(64) T chunk[kStreamChunk];
  for (int64_t n = 0; n < d.n; ++n) {
    const int64_t off = d.plane(n, c);
    const T* plane_residual = kResidual ? residual + off : nullptr;
    if (!stream) {
      normalise_run<kRelu, kResidual>(d.hw, x + off, mean, scale, beta, plane_residual, y + off);
      continue;
    }
    for (int64_t i = 0; i < d.hw; i += kStreamChunk) {
      const int64_t count = std::min(kStreamChunk, d.hw - i);
      normalise_run<kRelu, kResidual>(count, x + off + i, mean, scale, beta,
                                      kResidual ? plane_residual + i : nullptr, chunk);
      stream_copy(y + off + i, chunk, count * sizeof(T));
    }
  }
  if (stream) stream_fence();
}

template <class T>
void normalise_channel(bool relu, const BnDims& d, int64_t c, const T* x, float mean, float scale,
                       float beta, const T* residual, T* y) {
  const auto run = [&](auto with_relu, auto with_residual) {
    normalise_channel<decltype(with_relu)::value, decltype(with_residual)::value>(
        d, c, x, mean, scale, beta, residual, y);
  };
  using Yes = std::true_type;
  using No = std::false_type;
  if (relu)
    residual ? run(Yes{}, Yes{}) : run(Yes{}, No{});
  else
    residual ? run(No{}, Yes{}) : run(No{}, No{});
}

template <class T>
const T* data_or_null(const Tensor& t) {
  return t.defined() ? t.as<T>() : nullptr;
}

// dx = k * (g - mean_dy - (x - mean) * slope) over one channel, g the output gradient.
template <bool kRelu, bool kAccumulate, class T>
void input_gradient(const BnDims& d, int64_t c, const T* __restrict x, const T* __restrict dy,
                    const T* __restrict relu_y, float mean, float k, float mean_dy, float slope,
                    T* __restrict dx) {
  for (int64_t n = 0; n < d.n; ++n) {
    const int64_t off = d.plane(n, c);
#pragma omp simd
    for (int64_t i = 0; i < d.hw; ++i) {
      const float g = output_gradient<kRelu>(dy + off, kRelu ? relu_y + off : nullptr, i);
      const float v = k * (g - mean_dy - (load(x, off + i) - mean) * slope);
      store(dx, off + i, kAccumulate ? load(dx, off + i) + v : v);
    }
  }
}

}  // namespace

void batch_norm_forward_train(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                              const Tensor& running_mean, const Tensor& running_var,
                              ops::BatchNormParams p, const Tensor& y, const Tensor& saved_mean,
                              const Tensor& saved_invstd, const Tensor& residual) {
  const BnDims d = dims_of(x);
  const double m = static_cast<double>(d.count());
  with_activation_type(x.dtype, [&](auto t) {
    using T = decltype(t);
    const T* xs = x.as<T>();
    T* ys = y.as<T>();
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < d.c; ++c) {
      // Moments around the channel's first value: one pass, without the cancellation of
      // E[x^2] - E[x]^2 when the mean is large against the spread.
      const double shift = load(xs, d.plane(0, c));
      double sum, squares;
      channel_moments(d, c, xs, shift, sum, squares);
      const double mean_shifted = sum / m;
      const double mean = shift + mean_shifted;
      const double var = std::max(0.0, squares / m - mean_shifted * mean_shifted);
      const double invstd = 1.0 / std::sqrt(var + p.eps);
      saved_mean.f32()[c] = static_cast<float>(mean);
      saved_invstd.f32()[c] = static_cast<float>(invstd);
      normalise_channel(p.relu, d, c, xs, static_cast<float>(mean),
                        static_cast<float>(gamma.f32()[c] * invstd), beta.f32()[c],
                        data_or_null<T>(residual), ys);
      float& rm = running_mean.f32()[c];
      float& rv = running_var.f32()[c];
      rm = static_cast<float>((1.0 - p.momentum) * rm + p.momentum * mean);
      rv = static_cast<float>((1.0 - p.momentum) * rv + p.momentum * var * m / (m - 1.0));
    }
  });
}

void batch_norm_forward_eval(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                             const Tensor& running_mean, const Tensor& running_var,
                             ops::BatchNormParams p, const Tensor& y, const Tensor& residual) {
  const BnDims d = dims_of(x);
  with_activation_type(x.dtype, [&](auto t) {
    using T = decltype(t);
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < d.c; ++c) {
      const double var = running_var.f32()[c];
      normalise_channel(p.relu, d, c, x.as<T>(), running_mean.f32()[c],
                        static_cast<float>(gamma.f32()[c] / std::sqrt(var + p.eps)), beta.f32()[c],
                        data_or_null<T>(residual), y.as<T>());
    }
  });
}

void batch_norm_backward(const Tensor& x, const Tensor& dy, const Tensor& gamma,
                         const Tensor& saved_mean, const Tensor& saved_invstd, const Tensor& dx,
                         GradMode dx_mode, const Tensor& dgamma, const Tensor& dbeta,
                         const Tensor& relu_y) {
  const BnDims d = dims_of(x);
  const double m = static_cast<double>(d.count());
  const bool accumulate = dx_mode == GradMode::Accumulate;
  with_activation_type(x.dtype, [&](auto t) {
    using T = decltype(t);
    const T* xs = x.as<T>();
    const T* gs = dy.as<T>();
    const T* ry = relu_y.defined() ? relu_y.as<T>() : nullptr;
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < d.c; ++c) {
      const float mean = saved_mean.f32()[c], invstd = saved_invstd.f32()[c];
      double sum_dy, sum_dy_xc;
      channel_gradient_sums(d, c, xs, gs, ry, mean, sum_dy, sum_dy_xc);
      dbeta.f32()[c] = static_cast<float>(sum_dy);
      dgamma.f32()[c] = static_cast<float>(sum_dy_xc * invstd);
      if (!dx.defined()) continue;
      // dx = gamma * invstd * (dy - mean(dy) - xhat * mean(dy * xhat)), xhat = xc * invstd
      const float k = static_cast<float>(gamma.f32()[c] * invstd);
      const float mean_dy = static_cast<float>(sum_dy / m);
      const float slope = static_cast<float>(sum_dy_xc / m * invstd * invstd);
      const auto run = [&](auto relu, auto acc) {
        input_gradient<decltype(relu)::value, decltype(acc)::value>(d, c, xs, gs, ry, mean, k,
                                                                    mean_dy, slope, dx.as<T>());
      };
      using Yes = std::true_type;
      using No = std::false_type;
      if (ry)
        accumulate ? run(Yes{}, Yes{}) : run(Yes{}, No{});
      else
        accumulate ? run(No{}, Yes{}) : run(No{}, No{});
    }
  });
}

}  // namespace psgd::cpu

// ---- Stages of synchronised BN ------------------------------------------------------------------
namespace psgd::cpu {

void batch_norm_moments(const Tensor& x, const Tensor& shift, const Tensor& moments) {
  const BnDims d = dims_of(x);
  with_activation_type(x.dtype, [&](auto t) {
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < d.c; ++c) {
      double sum, squares;
      channel_moments(d, c, x.as<decltype(t)>(), shift.f32()[c], sum, squares);
      moments.f64()[c] = sum;
      moments.f64()[d.c + c] = squares;
    }
  });
}

void batch_norm_stats(const Tensor& shift, const Tensor& moments, int64_t count,
                      ops::BatchNormParams p, const Tensor& running_mean, const Tensor& running_var,
                      const Tensor& mean, const Tensor& invstd) {
  const int64_t channels = shift.numel();
  const double m = static_cast<double>(count);
  for (int64_t c = 0; c < channels; ++c) {
    const double mean_shifted = moments.f64()[c] / m;
    const double batch_mean = shift.f32()[c] + mean_shifted;  // read before running_mean moves
    const double var = std::max(0.0, moments.f64()[channels + c] / m - mean_shifted * mean_shifted);
    mean.f32()[c] = static_cast<float>(batch_mean);
    invstd.f32()[c] = static_cast<float>(1.0 / std::sqrt(var + p.eps));
    float& rm = running_mean.f32()[c];
    float& rv = running_var.f32()[c];
    rm = static_cast<float>((1.0 - p.momentum) * rm + p.momentum * batch_mean);
    rv = static_cast<float>((1.0 - p.momentum) * rv + p.momentum * var * m / (m - 1.0));
  }
}

void batch_norm_normalize(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                          const Tensor& mean, const Tensor& invstd, const Tensor& y) {
  const BnDims d = dims_of(x);
  with_activation_type(x.dtype, [&](auto t) {
    using T = decltype(t);
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < d.c; ++c)
      normalise_channel(false, d, c, x.as<T>(), mean.f32()[c], gamma.f32()[c] * invstd.f32()[c],
                        beta.f32()[c], static_cast<const T*>(nullptr), y.as<T>());
  });
}

void batch_norm_backward_reduce(const Tensor& x, const Tensor& dy, const Tensor& mean,
                                const Tensor& invstd, const Tensor& sums, const Tensor& dgamma,
                                const Tensor& dbeta) {
  const BnDims d = dims_of(x);
  with_activation_type(x.dtype, [&](auto t) {
    using T = decltype(t);
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < d.c; ++c) {
      double sum_dy, sum_dy_xc;
      channel_gradient_sums<T>(d, c, x.as<T>(), dy.as<T>(), nullptr, mean.f32()[c], sum_dy,
                               sum_dy_xc);
      const double sum_dy_xhat = sum_dy_xc * invstd.f32()[c];
      sums.f64()[c] = sum_dy;
      sums.f64()[d.c + c] = sum_dy_xhat;
      dbeta.f32()[c] = static_cast<float>(sum_dy);
      dgamma.f32()[c] = static_cast<float>(sum_dy_xhat);
    }
  });
}

void batch_norm_backward_input(const Tensor& x, const Tensor& dy, const Tensor& gamma,
                               const Tensor& mean, const Tensor& invstd, const Tensor& sums,
                               int64_t count, const Tensor& dx, GradMode dx_mode) {
  const BnDims d = dims_of(x);
  const double m = static_cast<double>(count);
  const bool accumulate = dx_mode == GradMode::Accumulate;
  with_activation_type(x.dtype, [&](auto t) {
    using T = decltype(t);
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < d.c; ++c) {
      // dx = gamma * invstd * (dy - sum(dy) / m - xhat * sum(dy * xhat) / m)
      const float mu = mean.f32()[c], is = invstd.f32()[c];
      const float k = gamma.f32()[c] * is;
      const float mean_dy = static_cast<float>(sums.f64()[c] / m);
      const float slope = static_cast<float>(sums.f64()[d.c + c] / m * is);
      const auto run = [&](auto acc) {
        input_gradient<false, decltype(acc)::value>(d, c, x.as<T>(), dy.as<T>(),
                                                    static_cast<const T*>(nullptr), mu, k, mean_dy,
                                                    slope, dx.as<T>());
      };
      accumulate ? run(std::true_type{}) : run(std::false_type{});
    }
  });
}

}  // namespace psgd::cpu
