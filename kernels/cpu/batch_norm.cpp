// Batch normalisation on the CPU, PyTorch semantics, for float32 and bf16 activations (T). One
// thread per channel; sums in double so that the statistics of large batches do not lose
// precision. Loops run over restrict-qualified plane pointers so that they vectorise.
#include <algorithm>
#include <bit>
#include <cmath>
#include <type_traits>

#include "kernels/bn_math.h"
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

// The gradient reaching BN's output: dy, or with a fused ReLU dy where the ReLU's output is open,
// read from that output or recomputed from x as the forward computed it. The select is the
// separate ReLU backward's, so the results are the same to the bit.
enum class Mask { None, ReluOutput, ReluFromInput };

template <class T>
struct OutputGradient {
  const T* dy;
  const T* relu_y;  // ReluOutput
  // The forward's (for ReluFromInput); the scale, gamma * invstd, is also dx's factor.
  float mean, scale, beta;
};

// g at element i of the planes dy and relu_y, x[i] = x, with the forward's mean, scale and beta.
template <Mask kMask, class T>
inline float output_gradient(const T* __restrict dy, const T* __restrict relu_y, int64_t i, float x,
                             float mean, float scale, float beta) {
  const float gradient = load(dy, i);
  if constexpr (kMask == Mask::ReluOutput) return load(relu_y, i) > 0.0f ? gradient : 0.0f;
  if constexpr (kMask == Mask::ReluFromInput) {
    // The select as a bit mask: as `open ? gradient : 0.0f` GCC turned it into a branch per
    // element, and the loops stayed scalar. The bits are the select's (+0 where closed).
    const bool open = bn_math::relu_open<T>(bn_math::affine(x, mean, scale, beta));
    return std::bit_cast<float>(std::bit_cast<uint32_t>(gradient) & (0u - uint32_t{open}));
  }
  return gradient;
}

// Calls f with the mask as a compile-time constant.
template <class F>
void with_mask(Mask mask, F&& f) {
  switch (mask) {
    case Mask::ReluOutput:
      return f(std::integral_constant<Mask, Mask::ReluOutput>{});
    case Mask::ReluFromInput:
      return f(std::integral_constant<Mask, Mask::ReluFromInput>{});
    case Mask::None:
      return f(std::integral_constant<Mask, Mask::None>{});
  }
}

// Sum of g and of g * (x - mean) over one channel, in double, g the output gradient.
template <Mask kMask, class T>
void channel_gradient_sums(const BnDims& d, int64_t c, const T* __restrict x, OutputGradient<T> g,
                           double& sum_dy, double& sum_dy_xc) {
  const float mean = g.mean, scale = g.scale, beta = g.beta;
  sum_dy = 0.0;
  sum_dy_xc = 0.0;
  for (int64_t n = 0; n < d.n; ++n) {
    const int64_t off = d.plane(n, c);
    const T* __restrict xp = x + off;
    const T* dy = g.dy + off;
    const T* relu_y = kMask == Mask::ReluOutput ? g.relu_y + off : nullptr;
#pragma omp simd reduction(+ : sum_dy, sum_dy_xc)
    for (int64_t i = 0; i < d.hw; ++i) {
      const float xv = load(xp, i);
      const float gv = output_gradient<kMask>(dy, relu_y, i, xv, mean, scale, beta);
      sum_dy += gv;
      sum_dy_xc += static_cast<double>(gv) * (xv - mean);
    }
  }
}

// y = (x - mean) * scale + beta over `count` elements, plus the residual where given, then ReLU
// where fused.
template <bool kRelu, bool kResidual, class T>
void normalise_run(int64_t count, const T* __restrict x, float mean, float scale, float beta,
                   const T* __restrict residual, T* __restrict y) {
#pragma omp simd
  for (int64_t i = 0; i < count; ++i) {
    float v = bn_math::affine(load(x, i), mean, scale, beta);
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

// dx = k * (g - mean_dy - (x - mean) * slope) over one channel, g the output gradient and k its
// scale.
template <Mask kMask, bool kAccumulate, class T>
void input_gradient(const BnDims& d, int64_t c, const T* __restrict x, OutputGradient<T> g,
                    float mean_dy, float slope, T* __restrict dx) {
  const float mean = g.mean, k = g.scale, beta = g.beta;
  for (int64_t n = 0; n < d.n; ++n) {
    const int64_t off = d.plane(n, c);
    const T* dy = g.dy + off;
    const T* relu_y = kMask == Mask::ReluOutput ? g.relu_y + off : nullptr;
#pragma omp simd
    for (int64_t i = 0; i < d.hw; ++i) {
      const float xv = load(x, off + i);
      const float v = k * (output_gradient<kMask>(dy, relu_y, i, xv, mean, k, beta) - mean_dy -
                           (xv - mean) * slope);
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
      const float invstd = static_cast<float>(1.0 / std::sqrt(var + p.eps));
      saved_mean.f32()[c] = static_cast<float>(mean);
      saved_invstd.f32()[c] = invstd;
      normalise_channel(p.relu, d, c, xs, static_cast<float>(mean),
                        bn_math::training_scale(gamma.f32()[c], invstd), beta.f32()[c],
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
                         const ops::ReluMaskSource& relu) {
  const Mask mask = relu.output.defined() ? Mask::ReluOutput
                    : relu.beta.defined() ? Mask::ReluFromInput
                                          : Mask::None;
  const BnDims d = dims_of(x);
  const double m = static_cast<double>(d.count());
  const bool accumulate = dx_mode == GradMode::Accumulate;
  with_activation_type(x.dtype, [&](auto t) {
    using T = decltype(t);
    const T* xs = x.as<T>();
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < d.c; ++c) {
      const float invstd = saved_invstd.f32()[c];
      // dx = gamma * invstd * (dy - mean(dy) - xhat * mean(dy * xhat)), xhat = xc * invstd; the
      // factor gamma * invstd is the forward's scale.
      const OutputGradient<T> g{dy.as<T>(), data_or_null<T>(relu.output), saved_mean.f32()[c],
                                bn_math::training_scale(gamma.f32()[c], invstd),
                                relu.beta.defined() ? relu.beta.f32()[c] : 0.0f};
      double sum_dy = 0.0, sum_dy_xc = 0.0;
      with_mask(mask, [&](auto kind) {
        channel_gradient_sums<decltype(kind)::value>(d, c, xs, g, sum_dy, sum_dy_xc);
      });
      dbeta.f32()[c] = static_cast<float>(sum_dy);
      dgamma.f32()[c] = static_cast<float>(sum_dy_xc * invstd);
      if (!dx.defined()) continue;
      const float mean_dy = static_cast<float>(sum_dy / m);
      const float slope = static_cast<float>(sum_dy_xc / m * invstd * invstd);
      with_mask(mask, [&](auto kind) {
        const auto run = [&](auto acc) {
          input_gradient<decltype(kind)::value, decltype(acc)::value>(d, c, xs, g, mean_dy, slope,
                                                                      dx.as<T>());
        };
        accumulate ? run(std::true_type{}) : run(std::false_type{});
      });
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
      normalise_channel(false, d, c, x.as<T>(), mean.f32()[c],
                        bn_math::training_scale(gamma.f32()[c], invstd.f32()[c]), beta.f32()[c],
                        static_cast<const T*>(nullptr), y.as<T>());
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
      const OutputGradient<T> g{dy.as<T>(), nullptr, mean.f32()[c], 0.0f, 0.0f};
      channel_gradient_sums<Mask::None>(d, c, x.as<T>(), g, sum_dy, sum_dy_xc);
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
      const float is = invstd.f32()[c];
      const float mean_dy = static_cast<float>(sums.f64()[c] / m);
      const float slope = static_cast<float>(sums.f64()[d.c + c] / m * is);
      const OutputGradient<T> g{dy.as<T>(), nullptr, mean.f32()[c],
                                bn_math::training_scale(gamma.f32()[c], is), 0.0f};
      const auto run = [&](auto acc) {
        input_gradient<Mask::None, decltype(acc)::value>(d, c, x.as<T>(), g, mean_dy, slope,
                                                         dx.as<T>());
      };
      accumulate ? run(std::true_type{}) : run(std::false_type{});
    }
  });
}

}  // namespace psgd::cpu
