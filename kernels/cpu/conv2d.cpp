// Convolution on the CPU. Planes so small that every output reads every input pixel (VGG16-bn's
// 2x2 planes) take one matrix product with the convolution's dense map (conv2d_small_plane.h).
// 3x3 convolutions at stride 1 padded by 1 on even planes of at least 4x4, with at least 32
// channels on both sides (or fewer, as winograd::computes says), take Winograd's F(2x2, 3x3)
// (conv2d_winograd.h). Other stride-1 and stride-2 convolutions on planes large enough take the
// direct method (conv2d_direct.h): forward, the data gradient, and the filter gradient of 3x3
// filters.
// Everything else is one GEMM over the whole batch, computed in cache-sized panels.
//
// im2col lays out the receptive fields of all N images as the columns of one (C*R*S, N*P*Q)
// matrix; the convolution is the product of the (K, C*R*S) weight matrix with it. That matrix
// is far larger than the caches (75 MB for a ResNet stage-1 layer at batch 128), so it is never
// built whole: each thread builds a panel of consecutive columns (about 1 MB, crossing image
// boundaries freely), multiplies it with a single-threaded sgemm while it is still in L2, and
// writes the results into NCHW. Backward panels hold whole images, so that scattering column
// gradients back into dx never shares an image plane between threads.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <optional>

#include "kernels/cpu/conv2d_direct.h"
#include "kernels/cpu/conv2d_small_plane.h"
#include "kernels/cpu/conv2d_winograd.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/staging.h"
#include "kernels/cpu/thread_partials.h"

namespace psgd::cpu {
namespace {

constexpr int64_t kPanelFloats = 256 * 1024;  // im2col floats per panel: half a core's L2
// But at least this many columns: each product packs the whole weight matrix (and the backward
// adds into the whole dw), so deep layers on small planes (VGG's 512 channels at 4x4 and 2x2,
// 9 MB of weights) need wide panels to amortise that, even if the panel then spills L2.
constexpr int64_t kMinPanelColumns = 256;

struct ConvDims {
  int64_t n, c, h, w;  // input
  int64_t k, r, s;     // filters
  int64_t p, q;        // output
  int64_t stride, pad;

  int64_t crs() const { return c * r * s; }
  int64_t pq() const { return p * q; }
  int64_t npq() const { return n * p * q; }
};

ConvDims dims_of(const Shape& x, const Shape& w, Conv2dGeometry g) {
  const Shape y = ops::conv2d_output_shape(x, w, g);
  return {x[0], x[1], x[2], x[3], w[0], w[2], w[3], y[2], y[3], g.stride, g.pad};
}

// A panel's columns: as many as fit kPanelFloats, at least kMinPanelColumns, but no more than
// a thread's share of the batch, so that every thread has a panel.
int64_t forward_panel_columns(const ConvDims& d, int threads) {
  const int64_t share = (d.npq() + threads - 1) / threads;
  const int64_t wanted = std::max(kMinPanelColumns, kPanelFloats / d.crs() / 16 * 16);
  return std::clamp<int64_t>(std::min(wanted, (share + 15) / 16 * 16), 1, d.npq());
}

int64_t backward_panel_images(const ConvDims& d, int threads) {
  const int64_t share = (d.n + threads - 1) / threads;
  const int64_t wanted =
      std::max(kPanelFloats / (d.crs() * d.pq()), (kMinPanelColumns + d.pq() - 1) / d.pq());
  return std::clamp<int64_t>(std::min(wanted, share), 1, d.n);
}

// Scratch floats one thread needs: columns and a (K, panel) matrix, plus in the backward pass
// the thread's private dw.
int64_t thread_floats(const ConvDims& d, int threads) {
  const int64_t forward = (d.crs() + d.k) * forward_panel_columns(d, threads);
  const int64_t backward =
      (d.crs() + d.k) * backward_panel_images(d, threads) * d.pq() + d.k * d.crs();
  return std::max(forward, backward);
}

// The convolution as the direct, Winograd and small-plane methods describe it, where `takes`
// says that method computes it (direct::worthwhile for the forward,
// direct::computes_data_gradient, direct::computes_filter_gradient, the winograd_ ones below,
// small_plane::computes).
std::optional<direct::Geometry> direct_geometry(const ConvDims& d,
                                                bool (*takes)(const direct::Geometry&)) {
  if (d.stride > direct::kMaxStride) return std::nullopt;
  const direct::Geometry g{d.n, d.c, d.h, d.w, d.k, d.r, d.s, d.pad, d.stride};
  if (!takes(g)) return std::nullopt;
  return g;
}

bool winograd_forward(const direct::Geometry& g) {
  return winograd::computes(g, winograd::Direction::Forward);
}

bool winograd_data_gradient(const direct::Geometry& g) {
  return winograd::computes(g, winograd::Direction::DataGradient);
}

bool winograd_filter_gradient(const direct::Geometry& g) {
  return winograd::computes(g, winograd::Direction::FilterGradient);
}

// The output columns q whose input column q * stride - pad + s lies inside [0, W): [lo, hi).
struct ValidColumns {
  int64_t lo, hi;
};

ValidColumns valid_columns(const ConvDims& d, int64_t s) {
  const int64_t first = d.pad - s;  // q * stride >= pad - s
  const int64_t lo = first <= 0 ? 0 : (first + d.stride - 1) / d.stride;
  const int64_t last = d.w - 1 + d.pad - s;  // q * stride <= W - 1 + pad - s
  const int64_t hi = last < 0 ? 0 : std::min(d.q, last / d.stride + 1);
  return {std::min(lo, hi), hi};
}

// Calls f(n, offset, length, done) for each run of global columns [j0, j0 + count) that stays
// within one image: columns n*PQ + offset .. + length, the run starting `done` into the panel.
template <class F>
void for_each_image_run(const ConvDims& d, int64_t j0, int64_t count, F&& f) {
  for (int64_t j = j0; j < j0 + count;) {
    const int64_t n = j / d.pq(), offset = j % d.pq();
    const int64_t length = std::min(d.pq() - offset, j0 + count - j);
    f(n, offset, length, j - j0);
    j += length;
  }
}

// Columns [j0, j0 + count) of the whole-batch im2col matrix into cols (C*R*S, count).
void im2col_columns(const ConvDims& d, const float* x, int64_t j0, int64_t count, float* cols) {
  for (int64_t row = 0; row < d.crs(); ++row) {
    const int64_t c = row / (d.r * d.s), r = row / d.s % d.r, s = row % d.s;
    const ValidColumns v = valid_columns(d, s);
    const int64_t shift = s - d.pad;  // output column q reads input column q * stride + shift
    float* out_row = cols + row * count;
    for_each_image_run(d, j0, count, [&](int64_t n, int64_t offset, int64_t length, int64_t done) {
      const float* plane = x + (n * d.c + c) * d.h * d.w;
      float* out = out_row + done;
      // Walk the output rows the run covers; divisions stay out of the loop.
      for (int64_t p = offset / d.q, q0 = offset % d.q; length > 0; ++p, q0 = 0) {
        const int64_t q1 = std::min(d.q, q0 + length);
        const int64_t lo = std::clamp(v.lo, q0, q1), hi = std::clamp(v.hi, lo, q1);
        const int64_t ih = p * d.stride - d.pad + r;
        // Plain loops: the rows are short (8 to 32 floats), too short for library calls.
        if (ih < 0 || ih >= d.h) {
          for (int64_t q = q0; q < q1; ++q) out[q - q0] = 0.0f;
        } else {
          const float* in_row = plane + ih * d.w;
          for (int64_t q = q0; q < lo; ++q) out[q - q0] = 0.0f;
          // Compile-time strides: GCC vectorises stride 2 as pairs of loads and a shuffle.
          if (d.stride == 1) {
#pragma omp simd
            for (int64_t q = lo; q < hi; ++q) out[q - q0] = in_row[q + shift];
          } else if (d.stride == 2) {
            for (int64_t q = lo; q < hi; ++q) out[q - q0] = in_row[q * 2 + shift];
          } else {
            for (int64_t q = lo; q < hi; ++q) out[q - q0] = in_row[q * d.stride + shift];
          }
          for (int64_t q = hi; q < q1; ++q) out[q - q0] = 0.0f;
        }
        out += q1 - q0;
        length -= q1 - q0;
      }
    });
  }
}

// The adjoint of im2col for whole images [n0, n0 + images): adds the column gradients
// cols (C*R*S, images*P*Q) into dx (N, C, H, W), after clearing it when overwriting.
void col2im_images(const ConvDims& d, const float* cols, int64_t n0, int64_t images, float* dx,
                   GradMode mode) {
  const int64_t ld = images * d.pq();
  for (int64_t n = n0; n < n0 + images; ++n) {
    for (int64_t c = 0; c < d.c; ++c) {
      float* plane = dx + (n * d.c + c) * d.h * d.w;
      if (mode == GradMode::Overwrite) std::fill(plane, plane + d.h * d.w, 0.0f);
      for (int64_t r = 0; r < d.r; ++r) {
        for (int64_t s = 0; s < d.s; ++s) {
          const ValidColumns v = valid_columns(d, s);
          const int64_t shift = s - d.pad;
          const float* in = cols + ((c * d.r + r) * d.s + s) * ld + (n - n0) * d.pq();
          for (int64_t p = 0; p < d.p; ++p, in += d.q) {
            const int64_t ih = p * d.stride - d.pad + r;
            if (ih < 0 || ih >= d.h) continue;
            float* out_row = plane + ih * d.w;
            if (d.stride == 1) {
#pragma omp simd
              for (int64_t q = v.lo; q < v.hi; ++q) out_row[q + shift] += in[q];
            } else {
              for (int64_t q = v.lo; q < v.hi; ++q) out_row[q * d.stride + shift] += in[q];
            }
          }
        }
      }
    }
  }
}

// Between NCHW (N, K, P*Q) and a panel (K, count) of global columns [j0, j0 + count).
void scatter_columns(const ConvDims& d, const float* panel, int64_t j0, int64_t count, float* y) {
  for (int64_t k = 0; k < d.k; ++k)
    for_each_image_run(d, j0, count, [&](int64_t n, int64_t offset, int64_t length, int64_t done) {
      std::memcpy(y + (n * d.k + k) * d.pq() + offset, panel + k * count + done,
                  sizeof(float) * length);
    });
}

void gather_columns(const ConvDims& d, const float* y, int64_t j0, int64_t count, float* panel) {
  for (int64_t k = 0; k < d.k; ++k)
    for_each_image_run(d, j0, count, [&](int64_t n, int64_t offset, int64_t length, int64_t done) {
      std::memcpy(panel + k * count + done, y + (n * d.k + k) * d.pq() + offset,
                  sizeof(float) * length);
    });
}

// The gradients the direct method does not take, through the whole-batch im2col matrix: dw
// and dx where defined.
void gemm_backward(Context& ctx, const ConvDims& d, const Tensor& x, const Tensor& w,
                   const Tensor& dy, const Tensor& dx, GradMode dx_mode, const Tensor& dw) {
  const int threads = ctx.threads();
  const int64_t per_thread = thread_floats(d, threads), images = backward_panel_images(d, threads);
  const int64_t panels = (d.n + images - 1) / images, columns = images * d.pq();
  float* ws = ctx.workspace(threads * per_thread).f32();
  const auto partial_dw = [&](int t) { return ws + t * per_thread + (d.crs() + d.k) * columns; };
  for (int t = 0; t < threads; ++t) std::fill(partial_dw(t), partial_dw(t) + d.k * d.crs(), 0.0f);
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num();
    float* cols = ws + t * per_thread;
    float* dy_panel = cols + d.crs() * columns;  // (K, panel)
#pragma omp for schedule(static)
    for (int64_t panel = 0; panel < panels; ++panel) {
      const int64_t n0 = panel * images, count_images = std::min(images, d.n - n0);
      const int64_t j0 = n0 * d.pq(), count = count_images * d.pq();
      gather_columns(d, dy.f32(), j0, count, dy_panel);
      if (dw.defined()) {
        im2col_columns(d, x.f32(), j0, count, cols);
        // dw += dy_panel (K, count) . cols^T (count, CRS)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, d.k, d.crs(), count, 1.0f, dy_panel,
                    count, cols, count, 1.0f, partial_dw(t), d.crs());
      }
      if (!dx.defined()) continue;
      // dcols (CRS, count) = w^T . dy_panel, over the columns no longer needed
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d.crs(), count, d.k, 1.0f, w.f32(),
                  d.crs(), dy_panel, count, 0.0f, cols, count);
      col2im_images(d, cols, n0, count_images, dx.f32(), dx_mode);
    }
  }
  if (dw.defined()) sum_in_thread_order(threads, d.k * d.crs(), partial_dw, dw.f32());
}

int64_t float_workspace_floats(int threads, const Shape& x, const Shape& w, Conv2dGeometry g) {
  const ConvDims d = dims_of(x, w, g);
  int64_t floats = threads * thread_floats(d, threads);
  if (const auto direct = direct_geometry(d, direct::worthwhile))
    floats = std::max(floats, direct::workspace_floats(threads, *direct));
  if (const auto direct = direct_geometry(d, direct::computes_data_gradient))
    floats = std::max(floats, direct::data_gradient_workspace_floats(threads, *direct));
  if (const auto direct = direct_geometry(d, direct::computes_filter_gradient))
    floats = std::max(floats, direct::filter_gradient_workspace_floats(threads, *direct));
  if (const auto small = direct_geometry(d, small_plane::computes))
    floats = std::max(floats, small_plane::workspace_floats(*small));
  if (const auto winograd = direct_geometry(d, winograd_forward))
    floats = std::max(floats,
                      winograd::workspace_floats(threads, *winograd, winograd::Direction::Forward));
  if (const auto winograd = direct_geometry(d, winograd_data_gradient))
    floats = std::max(
        floats, winograd::workspace_floats(threads, *winograd, winograd::Direction::DataGradient));
  if (const auto winograd = direct_geometry(d, winograd_filter_gradient))
    floats = std::max(floats, winograd::workspace_floats(threads, *winograd,
                                                         winograd::Direction::FilterGradient));
  return floats;
}

void forward_f32(Context& ctx, const Tensor& x, const Tensor& w, Conv2dGeometry g,
                 const Tensor& y) {
  const ConvDims d = dims_of(x.shape, w.shape, g);
  if (d.n == 0) return;
  const int threads = ctx.threads();
  if (const auto small = direct_geometry(d, small_plane::computes)) {
    small_plane::forward(x.f32(), w.f32(), *small, y.f32(),
                         ctx.workspace(small_plane::workspace_floats(*small)).f32());
    return;
  }
  if (const auto winograd = direct_geometry(d, winograd_forward)) {
    constexpr auto kForward = winograd::Direction::Forward;
    winograd::convolve(
        threads, x.f32(), w.f32(), *winograd, kForward, y.f32(), false,
        ctx.workspace(winograd::workspace_floats(threads, *winograd, kForward)).f32());
    return;
  }
  if (const auto direct = direct_geometry(d, direct::worthwhile)) {
    direct::convolve(threads, x.f32(), w.f32(), *direct, y.f32(),
                     ctx.workspace(direct::workspace_floats(threads, *direct)).f32());
    return;
  }
  const int64_t per_thread = thread_floats(d, threads);
  const int64_t columns = forward_panel_columns(d, threads);
  const int64_t panels = (d.npq() + columns - 1) / columns;
  float* ws = ctx.workspace(threads * per_thread).f32();
#pragma omp parallel num_threads(threads)
  {
    float* cols = ws + omp_get_thread_num() * per_thread;
    float* out = cols + d.crs() * columns;  // (K, panel)
#pragma omp for schedule(static)
    for (int64_t panel = 0; panel < panels; ++panel) {
      const int64_t j0 = panel * columns, count = std::min(columns, d.npq() - j0);
      im2col_columns(d, x.f32(), j0, count, cols);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d.k, count, d.crs(), 1.0f, w.f32(),
                  d.crs(), cols, count, 0.0f, out, count);
      scatter_columns(d, out, j0, count, y.f32());
    }
  }
}

void backward_f32(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& dy,
                  Conv2dGeometry g, const Tensor& dx, GradMode dx_mode, const Tensor& dw) {
  const ConvDims d = dims_of(x.shape, w.shape, g);
  if (d.n == 0) {  // an empty sum
    std::fill(dw.f32(), dw.f32() + dw.numel(), 0.0f);
    return;
  }
  const int threads = ctx.threads();
  if (const auto small = direct_geometry(d, small_plane::computes)) {
    float* map = ctx.workspace(small_plane::workspace_floats(*small)).f32();
    small_plane::filter_gradient(x.f32(), dy.f32(), *small, dw.f32(), map);
    if (dx.defined())
      small_plane::data_gradient(dy.f32(), w.f32(), *small, dx.f32(),
                                 dx_mode == GradMode::Accumulate, map);
    return;
  }
  const auto winograd_dx = dx.defined() ? direct_geometry(d, winograd_data_gradient) : std::nullopt;
  const auto direct_dx = dx.defined() && !winograd_dx
                             ? direct_geometry(d, direct::computes_data_gradient)
                             : std::nullopt;
  const auto winograd_dw = direct_geometry(d, winograd_filter_gradient);
  const auto direct_dw =
      winograd_dw ? std::nullopt : direct_geometry(d, direct::computes_filter_gradient);
  // Each method in turn, reusing the workspace.
  if ((!direct_dw && !winograd_dw) || (dx.defined() && !direct_dx && !winograd_dx))
    gemm_backward(ctx, d, x, w, dy, direct_dx || winograd_dx ? Tensor() : dx, dx_mode,
                  direct_dw || winograd_dw ? Tensor() : dw);
  if (winograd_dw) {
    constexpr auto kFilter = winograd::Direction::FilterGradient;
    winograd::filter_gradient(
        threads, x.f32(), dy.f32(), *winograd_dw, dw.f32(),
        ctx.workspace(winograd::workspace_floats(threads, *winograd_dw, kFilter)).f32());
  }
  if (direct_dw) {
    direct::filter_gradient(
        threads, x.f32(), dy.f32(), *direct_dw, dw.f32(),
        ctx.workspace(direct::filter_gradient_workspace_floats(threads, *direct_dw)).f32());
  }
  if (direct_dx) {
    direct::data_gradient(
        threads, dy.f32(), w.f32(), *direct_dx, dx.f32(), dx_mode == GradMode::Accumulate,
        ctx.workspace(direct::data_gradient_workspace_floats(threads, *direct_dx)).f32());
  }
  if (winograd_dx) {
    constexpr auto kData = winograd::Direction::DataGradient;
    winograd::convolve(
        threads, dy.f32(), w.f32(), *winograd_dx, kData, dx.f32(), dx_mode == GradMode::Accumulate,
        ctx.workspace(winograd::workspace_floats(threads, *winograd_dx, kData)).f32());
  }
}

}  // namespace

int64_t conv2d_workspace_floats(int threads, DType activations, const Shape& x, const Shape& w,
                                Conv2dGeometry g) {
  const int64_t kernel = float_workspace_floats(threads, x, w, g);
  if (activations == DType::F32) return kernel;
  // Backward stages w, x, dy and dx; forward w, x and y.
  const Shape y = ops::conv2d_output_shape(x, w, g);
  return kernel + staging_floats({w, x, y, x});
}

void conv2d_forward(Context& ctx, const Tensor& x, const Tensor& w, Conv2dGeometry g,
                    const Tensor& y) {
  Staging staging(ctx, float_workspace_floats(ctx.threads(), x.shape, w.shape, g));
  const Tensor y32 = staging.output_for(y);
  forward_f32(ctx, staging.widened(x), staging.weights(w), g, y32);
  unstage(y32, y);
}

void conv2d_backward(Context& ctx, const Tensor& x, const Tensor& w, const Tensor& dy,
                     Conv2dGeometry g, const Tensor& dx, GradMode dx_mode, const Tensor& dw) {
  Staging staging(ctx, float_workspace_floats(ctx.threads(), x.shape, w.shape, g));
  const Tensor dx32 = staging.output_for(dx, dx_mode);
  backward_f32(ctx, staging.widened(x), staging.weights(w), staging.widened(dy), g, dx32, dx_mode,
               dw);
  unstage(dx32, dx);
  if (x.dtype == DType::BF16) round_to_bf16_precision(dw);
}

}  // namespace psgd::cpu
