// Op outputs against hand-computed values and naive reference loops, and the ops' errors.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/conv2d_winograd.h"
#include "kernels/ops.h"
#include "tests/support/batch_norm_on_zero.h"
#include "tests/support/difference.h"
#include "tests/support/host_tensor.h"

using namespace psgd;
using namespace psgd::test;

namespace {

// The textbook seven loops of a convolution: f(input index, weight index, output index) for
// every product of input and weight that lands in an output.
template <class F>
void for_each_product(const Shape& x, const Shape& w, const Shape& y, int stride, int pad, F f) {
  for (int64_t n = 0; n < y[0]; ++n)
    for (int64_t k = 0; k < y[1]; ++k)
      for (int64_t p = 0; p < y[2]; ++p)
        for (int64_t q = 0; q < y[3]; ++q)
          for (int64_t c = 0; c < x[1]; ++c)
            for (int64_t r = 0; r < w[2]; ++r)
              for (int64_t s = 0; s < w[3]; ++s) {
                const int64_t ih = p * stride - pad + r, iw = q * stride - pad + s;
                if (ih < 0 || ih >= x[2] || iw < 0 || iw >= x[3]) continue;
                f(((n * x[1] + c) * x[2] + ih) * x[3] + iw, ((k * w[1] + c) * w[2] + r) * w[3] + s,
                  ((n * y[1] + k) * y[2] + p) * y[3] + q);
              }
}

// Rounding allowances: float32 sums of thousands of products (dw sums over N * P * Q, and
// Winograd's transforms add a few terms more) drift from the exact value by a small multiple of
// the sum of their magnitudes.
void to_allowances(std::vector<double>& magnitudes) {
  for (double& v : magnitudes) v = 1e-6 * v + 1e-7;
}

// The exact convolution y = x * w, with each output's rounding allowance.
struct Convolution {
  std::vector<double> y, allowance;
};

Convolution naive_conv(const HostTensor& x, const HostTensor& w, int stride, int pad,
                       const Shape& y) {
  Convolution c{std::vector<double>(y.numel()), std::vector<double>(y.numel())};
  for_each_product(x.t().shape, w.t().shape, y, stride, pad,
                   [&](int64_t xi, int64_t wi, int64_t yi) {
                     c.y[yi] += double(x[xi]) * w[wi];
                     c.allowance[yi] += std::abs(double(x[xi]) * w[wi]);
                   });
  to_allowances(c.allowance);
  return c;
}

// The exact adjoints, dx += dy * w and dw = dy * x over the same products, with each sum's
// rounding allowance.
struct Adjoints {
  std::vector<double> dx, dw, dx_allowance, dw_allowance;
};

Adjoints naive_conv_backward(const HostTensor& x, const HostTensor& w, const HostTensor& dy,
                             int stride, int pad, const HostTensor& dx_before) {
  Adjoints a{std::vector<double>(dx_before.numel()), std::vector<double>(w.numel()),
             std::vector<double>(dx_before.numel()), std::vector<double>(w.numel())};
  for (int64_t i = 0; i < dx_before.numel(); ++i) {
    a.dx[i] = dx_before[i];
    a.dx_allowance[i] = std::abs(dx_before[i]);
  }
  for_each_product(x.t().shape, w.t().shape, dy.t().shape, stride, pad,
                   [&](int64_t xi, int64_t wi, int64_t yi) {
                     a.dx[xi] += double(dy[yi]) * w[wi];
                     a.dx_allowance[xi] += std::abs(double(dy[yi]) * w[wi]);
                     a.dw[wi] += double(dy[yi]) * x[xi];
                     a.dw_allowance[wi] += std::abs(double(dy[yi]) * x[xi]);
                   });
  to_allowances(a.dx_allowance);
  to_allowances(a.dw_allowance);
  return a;
}

// Shapes that take each CPU method: 3x3 filters at stride 1 padded by 1 on even planes of at
// least 4x4 with at least 32 channels on both sides take Winograd's F(2x2, 3x3) (without AVX-512
// forward and data gradient from 16 on planes 8, 16 or 32 wide; with it the filter gradient from
// 64); planes where every output reads every pixel take one matrix
// product with the convolution's dense map; other strides 1 and 2 go direct, by rows where the
// output width is a multiple of the vector lanes (4 for SSE, 8 for AVX2, 16 for AVX-512) or half of
// them on an even number of rows, else along the flat padded plane where that wastes little; stride
// 3, filters of more than 7x7 taps, and small planes such as 4x4 under AVX-512, take the im2col
// GEMM. The direct data gradient needs square filters and pad < R at stride 1, filters of at least
// 2x2 at stride 2 (by the phases of dx). The direct filter gradient takes the same planes with 3x3
// filters, over input channels where they are a multiple of the lanes, else at stride 1 over output
// channels where those are (16 covers every build); the GEMM computes the others.
struct ConvCase {
  Shape x, w;
  int stride, pad;
};
const ConvCase kConvCases[] = {{{3, 3, 7, 9}, {5, 3, 3, 3}, 1, 1},
                               {{2, 5, 20, 17}, {11, 5, 5, 5}, 1, 2},
                               {{2, 4, 18, 18}, {9, 4, 3, 3}, 1, 0},   // data gradient padded by 2
                               {{1, 1, 33, 40}, {3, 1, 3, 3}, 1, 1},   // fewer channels than a tile
                               {{2, 3, 32, 32}, {10, 3, 3, 3}, 1, 1},  // rows of whole vectors
                               {{3, 6, 8, 8}, {7, 6, 3, 3}, 1, 1},     // half rows (AVX-512)
                               {{1, 2, 7, 8}, {3, 2, 3, 3}, 1, 1},     // odd rows: flat
                               {{2, 6, 4, 4}, {5, 6, 3, 3}, 1, 1},     // half rows (AVX2), or GEMM
                               {{5, 3, 9, 16}, {5, 3, 3, 3}, 1, 1},    // rows, 3 + 2 channels
                               {{2, 3, 6, 2}, {4, 3, 3, 3}, 1, 1},     // half rows (SSE), or GEMM
                               {{2, 2, 10, 12}, {3, 2, 3, 5}, 1, 1},   // R != S
                               {{2, 3, 12, 12}, {4, 3, 3, 3}, 1, 3},   // pad > R - 1
                               {{2, 4, 9, 7}, {6, 4, 3, 3}, 2, 1},
                               {{3, 5, 6, 6}, {2, 5, 1, 1}, 2, 0},
                               {{1, 2, 11, 4}, {3, 2, 5, 3}, 3, 2},
                               // several cache panels, ending mid-row and mid-image
                               {{3, 3, 61, 67}, {4, 3, 3, 3}, 1, 1},
                               {{4, 16, 33, 31}, {8, 16, 3, 3}, 2, 1},
                               // direct filter gradients: output channels in blocks of 3, 2 + 2
                               // and 2, input channels in several vectors, no padding
                               {{3, 16, 8, 8}, {7, 16, 3, 3}, 1, 1},
                               {{5, 32, 9, 11}, {4, 32, 3, 3}, 1, 1},
                               {{2, 48, 10, 12}, {5, 48, 3, 3}, 1, 0},
                               // one image per chunk, several chunks per thread; 1 channel
                               {{8, 16, 96, 96}, {1, 16, 3, 3}, 1, 1},
                               // over output channels: input channels in blocks of 3, of 3 + 2
                               // (AVX-512), and 1; several chunks per thread
                               {{3, 3, 16, 16}, {16, 3, 3, 3}, 1, 1},
                               {{2, 5, 9, 11}, {32, 5, 3, 3}, 1, 1},
                               {{2, 1, 28, 28}, {16, 1, 3, 3}, 1, 1},
                               {{7, 3, 96, 96}, {16, 3, 3, 3}, 1, 1},
                               // padded by 3 with fewer images than threads; over output
                               // channels padded by 2 (blocks of 2 + 2) and by 0 (3 + 2 + 2)
                               {{2, 16, 5, 7}, {2, 16, 3, 3}, 1, 3},
                               {{3, 4, 9, 7}, {16, 4, 3, 3}, 1, 2},
                               {{3, 7, 9, 11}, {16, 7, 3, 3}, 1, 0},
                               // chunks of 4 images, then shorter ones; blocks of 3 then 2 + 2
                               {{17, 16, 40, 40}, {16, 16, 3, 3}, 1, 1},
                               // stride 2 direct, from phase planes: ResNet's rows, half rows
                               // and 1x1 filters (one phase; dx by the GEMM); flat with 5x5
                               // filters padded by 2 and odd planes; 3x2 filters; unpadded
                               {{2, 16, 32, 32}, {32, 16, 3, 3}, 2, 1},
                               {{3, 32, 16, 16}, {20, 32, 3, 3}, 2, 1},
                               {{2, 16, 32, 32}, {32, 16, 1, 1}, 2, 0},
                               {{2, 3, 37, 35}, {4, 3, 5, 5}, 2, 2},
                               {{2, 2, 20, 24}, {3, 2, 3, 2}, 2, 1},
                               {{2, 16, 33, 33}, {5, 16, 3, 3}, 2, 0},
                               // more than 7x7 taps: the GEMM
                               {{1, 2, 20, 20}, {2, 2, 8, 8}, 1, 3},
                               // Winograd F(2x2, 3x3) (at least 32 channels on both sides, 16
                               // for the forward and data gradient on rows of 4, 8 or 16 tiles
                               // without AVX-512, 64 for the filter gradient with it): 32
                               // channels, the
                               // filter gradient direct with AVX-512; output channels short of a
                               // register block (68) and tiles short of a vector, two blocks of
                               // tile rows crossing images, the last one short; blocks of exactly
                               // three vectors; rows of three tiles, two rows per image; the fewest
                               // tiles a block takes, more than fit L2; the filter
                               // gradient's larger blocks, two wanted split into one per
                               // thread, four into six, two per thread; rows of 16 tiles, two
                               // vectors of the input transform's register path (AVX2 and
                               // AVX-512; four at SSE4.2), its carries between them; 16 channels
                               // on rows of 16 tiles (forward and data gradient without
                               // AVX-512, the filter gradient direct). 2x2 planes: the dense map
                               // of small planes
                               {{3, 32, 16, 16}, {32, 32, 3, 3}, 1, 1},
                               {{5, 64, 10, 10}, {68, 64, 3, 3}, 1, 1},
                               {{9, 64, 16, 16}, {64, 64, 3, 3}, 1, 1},
                               {{5, 128, 8, 8}, {128, 128, 3, 3}, 1, 1},
                               {{9, 64, 4, 6}, {64, 64, 3, 3}, 1, 1},
                               {{17, 64, 2, 2}, {64, 64, 3, 3}, 1, 1},
                               {{3, 256, 4, 4}, {72, 256, 3, 3}, 1, 1},
                               {{25, 64, 16, 16}, {64, 64, 3, 3}, 1, 1},
                               {{2, 32, 32, 32}, {32, 32, 3, 3}, 1, 1},
                               {{3, 16, 32, 32}, {16, 16, 3, 3}, 1, 1},
                               // planes where every output reads every pixel, as a dense map:
                               // 1x1 (the centre tap alone), 2x1, 3x3 under 5x5 filters; and
                               // 3x2 and 2x3 under 3x3 filters, a row or a column too many
                               {{3, 5, 1, 1}, {4, 5, 3, 3}, 1, 1},
                               {{4, 3, 2, 1}, {6, 3, 3, 3}, 1, 1},
                               {{2, 4, 3, 3}, {5, 4, 5, 5}, 1, 2},
                               {{2, 3, 3, 2}, {4, 3, 3, 3}, 1, 1},
                               {{2, 3, 2, 3}, {4, 3, 3, 3}, 1, 1}};
constexpr int kConvThreads = 3;  // more threads than some batches have images, shares uneven

// Reserves the convolution's workspace and fills it with NaN, as a workspace left by other ops
// holds anything: a method that needs zeros there must write them.
void reserve_poisoned_workspace(Context& ctx, int64_t floats) {
  ctx.reserve_workspace(floats);
  const Tensor ws = ctx.workspace(floats);
  std::fill(ws.f32(), ws.f32() + floats, std::numeric_limits<float>::quiet_NaN());
}

Tensor labels_of(std::vector<int32_t>& v) {
  return Tensor(v.data(), Shape{static_cast<int64_t>(v.size())}, Device::CPU);
}

}  // namespace

TEST_CASE("conv2d: a hand-computed 2x2 box filter") {
  Context ctx(Device::CPU, 1);
  HostTensor x(Shape{1, 1, 3, 3}), w(Shape{1, 1, 2, 2}, 1.0f), y(Shape{1, 1, 2, 2});
  for (int i = 0; i < 9; ++i) x[i] = static_cast<float>(i + 1);
  ctx.reserve_workspace(ops::conv2d_workspace_floats(ctx, x.t().shape, w.t().shape, {1, 0}));
  ops::conv2d_forward(ctx, x.t(), w.t(), {1, 0}, y.t());
  CHECK(y[0] == 12.0f);
  CHECK(y[1] == 16.0f);
  CHECK(y[2] == 24.0f);
  CHECK(y[3] == 28.0f);
}

TEST_CASE("conv2d: every CPU method equals the textbook loops") {
  for (const ConvCase& c : kConvCases) {
    CAPTURE(c.x.str());
    CAPTURE(c.w.str());
    Context ctx(Device::CPU, kConvThreads);
    HostTensor x(c.x), w(c.w);
    fill_uniform(x.t(), -1, 1, 1, 0);
    fill_uniform(w.t(), -1, 1, 1, 1);
    const ops::Conv2dGeometry g{c.stride, c.pad};
    HostTensor y(ops::conv2d_output_shape(c.x, c.w, g));
    reserve_poisoned_workspace(ctx, ops::conv2d_workspace_floats(ctx, c.x, c.w, g));
    ops::conv2d_forward(ctx, x.t(), w.t(), g, y.t());
    const Convolution ref = naive_conv(x, w, c.stride, c.pad, y.t().shape);
    for (int64_t i = 0; i < y.numel(); ++i) REQUIRE(std::abs(y[i] - ref.y[i]) <= ref.allowance[i]);
  }
}

TEST_CASE("conv2d backward: every CPU method equals the exact adjoints and repeats to the bit") {
  for (const ConvCase& c : kConvCases) {
    for (const ops::GradMode mode : {ops::GradMode::Overwrite, ops::GradMode::Accumulate}) {
      CAPTURE(c.x.str());
      CAPTURE(c.w.str());
      CAPTURE(mode == ops::GradMode::Accumulate);
      Context ctx(Device::CPU, kConvThreads);
      const ops::Conv2dGeometry g{c.stride, c.pad};
      HostTensor x(c.x), w(c.w), dy(ops::conv2d_output_shape(c.x, c.w, g));
      HostTensor dx(c.x), dw(c.w);
      fill_uniform(x.t(), -1, 1, 2, 0);
      fill_uniform(w.t(), -1, 1, 2, 1);
      fill_uniform(dy.t(), -1, 1, 2, 2);
      fill_uniform(dx.t(), -1, 1, 2, 3);
      const HostTensor zero(c.x);
      const Adjoints ref = naive_conv_backward(x, w, dy, c.stride, c.pad,
                                               mode == ops::GradMode::Accumulate ? dx : zero);
      reserve_poisoned_workspace(ctx, ops::conv2d_workspace_floats(ctx, c.x, c.w, g));
      ops::conv2d_backward(ctx, x.t(), w.t(), dy.t(), g, dx.t(), mode, dw.t());
      for (int64_t i = 0; i < dx.numel(); ++i)
        REQUIRE(std::abs(dx[i] - ref.dx[i]) <= ref.dx_allowance[i]);
      for (int64_t i = 0; i < dw.numel(); ++i)
        REQUIRE(std::abs(dw[i] - ref.dw[i]) <= ref.dw_allowance[i]);
      if (mode == ops::GradMode::Accumulate) continue;
      // Again, over what the first run left in the workspace: the same bits.
      const std::vector<float> first_dx(dx.data(), dx.data() + dx.numel()),
          first_dw(dw.data(), dw.data() + dw.numel());
      ops::conv2d_backward(ctx, x.t(), w.t(), dy.t(), g, dx.t(), mode, dw.t());
      REQUIRE(std::equal(first_dx.begin(), first_dx.end(), dx.data()));
      REQUIRE(std::equal(first_dw.begin(), first_dw.end(), dw.data()));
    }
  }
}

TEST_CASE("conv2d: Winograd's forward and data gradient give the same bits on any team") {
  // Its blocks follow the threads; each tile's arithmetic is its own.
  for (const ConvCase& c : kConvCases) {
    const cpu::direct::Geometry geometry{.n = c.x[0],
                                         .c = c.x[1],
                                         .h = c.x[2],
                                         .w = c.x[3],
                                         .k = c.w[0],
                                         .r = c.w[2],
                                         .s = c.w[3],
                                         .pad = c.pad,
                                         .stride = c.stride};
    if (!cpu::winograd::computes(geometry, cpu::winograd::Direction::Forward)) continue;
    CAPTURE(c.x.str());
    CAPTURE(c.w.str());
    const ops::Conv2dGeometry g{c.stride, c.pad};
    HostTensor x(c.x), w(c.w), dy(ops::conv2d_output_shape(c.x, c.w, g)), dw(c.w);
    fill_uniform(x.t(), -1, 1, 5, 0);
    fill_uniform(w.t(), -1, 1, 5, 1);
    fill_uniform(dy.t(), -1, 1, 5, 2);
    std::vector<float> first_y, first_dx;
    for (const int threads : {1, 2, 3, 5, 8}) {
      CAPTURE(threads);
      Context ctx(Device::CPU, threads);
      HostTensor y(dy.t().shape), dx(c.x);
      reserve_poisoned_workspace(ctx, ops::conv2d_workspace_floats(ctx, c.x, c.w, g));
      ops::conv2d_forward(ctx, x.t(), w.t(), g, y.t());
      ops::conv2d_backward(ctx, x.t(), w.t(), dy.t(), g, dx.t(), ops::GradMode::Overwrite, dw.t());
      if (first_y.empty()) {
        first_y.assign(y.data(), y.data() + y.numel());
        first_dx.assign(dx.data(), dx.data() + dx.numel());
      }
      REQUIRE(std::equal(first_y.begin(), first_y.end(), y.data()));
      REQUIRE(std::equal(first_dx.begin(), first_dx.end(), dx.data()));
    }
  }
}

TEST_CASE("conv2d: an empty batch gives an empty output and a zero filter gradient") {
  for (const int stride : {1, 2}) {
    CAPTURE(stride);
    Context ctx(Device::CPU, kConvThreads);
    const Shape xs{0, 3, 16, 16}, ws{4, 3, 3, 3};
    const ops::Conv2dGeometry g{stride, 1};
    HostTensor x(xs), w(ws, 1.0f), y(ops::conv2d_output_shape(xs, ws, g)), dx(xs), dw(ws, 7.0f);
    ctx.reserve_workspace(ops::conv2d_workspace_floats(ctx, xs, ws, g));
    ops::conv2d_forward(ctx, x.t(), w.t(), g, y.t());
    ops::conv2d_backward(ctx, x.t(), w.t(), y.t(), g, dx.t(), ops::GradMode::Overwrite, dw.t());
    for (int64_t i = 0; i < dw.numel(); ++i) REQUIRE(dw[i] == 0.0f);
  }
}

TEST_CASE("conv2d: shape errors name the op and the shapes") {
  Context ctx(Device::CPU, 1);
  HostTensor x(Shape{1, 3, 5, 5}), w(Shape{4, 2, 3, 3}), y(Shape{1, 4, 5, 5});
  CHECK_THROWS_WITH_AS(ops::conv2d_forward(ctx, x.t(), w.t(), {1, 1}, y.t()),
                       doctest::Contains("input has 3 channels, weight expects 2"), Error);
  HostTensor w3(Shape{4, 3, 3, 3}), wrong(Shape{1, 4, 4, 4});
  ctx.reserve_workspace(1 << 12);
  CHECK_THROWS_WITH_AS(ops::conv2d_forward(ctx, x.t(), w3.t(), {1, 1}, wrong.t()),
                       doctest::Contains("expected (1, 4, 5, 5)"), Error);
  CHECK_THROWS_AS(ops::conv2d_output_shape(Shape{1, 3, 2, 2}, Shape{1, 3, 5, 5}, {1, 0}), Error);
}

TEST_CASE("batch norm: training normalises, updates running stats and counts") {
  // Planes of 5 values are written the ordinary way; of 67 (not starting on a vector's
  // alignment) and 1,221 (two chunks) with streaming stores, except at their ends.
  for (const int64_t hw : {5, 67, 1221}) {
    CAPTURE(hw);
    Context ctx(Device::CPU, 2);
    const int64_t n = 3, c = 2;
    HostTensor x(Shape{n, c, 1, hw}), y(x.t().shape), gamma(Shape{c}), beta(Shape{c});
    HostTensor rm(Shape{c}, 0.5f), rv(Shape{c}, 2.0f), mean(Shape{c}), invstd(Shape{c});
    fill_uniform(x.t(), -3, 5, 2, 0);
    gamma[0] = 2.0f, gamma[1] = 0.5f, beta[0] = 1.0f, beta[1] = -1.0f;
    ops::batch_norm_forward_train(ctx, x.t(), gamma.t(), beta.t(), rm.t(), rv.t(), {}, y.t(),
                                  mean.t(), invstd.t());
    for (int64_t ch = 0; ch < c; ++ch) {
      double s = 0, s2 = 0, ys = 0, ys2 = 0;
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < hw; ++j) {
          const int64_t off = (i * c + ch) * hw + j;
          s += x[off], s2 += double(x[off]) * x[off], ys += y[off], ys2 += double(y[off]) * y[off];
        }
      const double m = n * hw, mu = s / m, var = s2 / m - mu * mu;
      CHECK(mean[ch] == doctest::Approx(mu).epsilon(1e-6));
      CHECK(invstd[ch] == doctest::Approx(1.0 / std::sqrt(var + 1e-5)).epsilon(1e-5));
      CHECK(rm[ch] == doctest::Approx(0.9 * 0.5 + 0.1 * mu).epsilon(1e-6));
      CHECK(rv[ch] == doctest::Approx(0.9 * 2.0 + 0.1 * var * m / (m - 1)).epsilon(1e-5));
      CHECK(ys / m == doctest::Approx(beta[ch]).epsilon(1e-5));
      CHECK(std::sqrt(ys2 / m - (ys / m) * (ys / m)) ==
            doctest::Approx(gamma[ch] * std::sqrt(var / (var + 1e-5))).epsilon(1e-4));
      // And each value in its place.
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < hw; ++j) {
          const int64_t off = (i * c + ch) * hw + j;
          const double expected = (x[off] - mu) / std::sqrt(var + 1e-5) * gamma[ch] + beta[ch];
          REQUIRE(std::abs(y[off] - expected) <= 1e-5 * (1.0 + std::abs(expected)));
        }
    }
  }
}

TEST_CASE("batch norm: evaluation uses the running statistics") {
  Context ctx(Device::CPU, 1);
  HostTensor x(Shape{2, 1, 1, 2}), y(x.t().shape), gamma(Shape{1}, 3.0f), beta(Shape{1}, 1.0f);
  HostTensor rm(Shape{1}, 2.0f), rv(Shape{1}, 4.0f - 1e-5f);
  x[0] = 0, x[1] = 2, x[2] = 4, x[3] = 6;
  ops::batch_norm_forward_eval(ctx, x.t(), gamma.t(), beta.t(), rm.t(), rv.t(), {}, y.t());
  CHECK(y[0] == doctest::Approx(-2.0f));
  CHECK(y[2] == doctest::Approx(4.0f));
  HostTensor one(Shape{1, 1, 1, 1}), mean(Shape{1}), invstd(Shape{1});
  CHECK_THROWS_WITH_AS(ops::batch_norm_forward_train(ctx, one.t(), gamma.t(), beta.t(), rm.t(),
                                                     rv.t(), {}, one.t(), mean.t(), invstd.t()),
                       doctest::Contains("more than one value per channel"), Error);
}

TEST_CASE("batch norm with its ReLU fused equals BN then ReLU, to the bit") {
  Context ctx(Device::CPU, 2);
  const int64_t n = 4, c = 3;
  HostTensor x(Shape{n, c, 5, 6}), dy(x.t().shape), gamma(Shape{c}), beta(Shape{c});
  fill_uniform(x.t(), -2, 3, 4, 0);
  fill_uniform(dy.t(), -1, 1, 4, 1);
  fill_uniform(gamma.t(), 0.5, 2, 4, 2);
  fill_uniform(beta.t(), -1, 1, 4, 3);
  HostTensor y[2] = {HostTensor(x.t().shape), HostTensor(x.t().shape)};
  HostTensor dx[2] = {HostTensor(x.t().shape, 0.5f), HostTensor(x.t().shape, 0.5f)};
  HostTensor eval[2] = {HostTensor(x.t().shape), HostTensor(x.t().shape)};
  HostTensor bn_y(x.t().shape), open_dy(x.t().shape);
  std::vector<float> statistics[2];  // running mean and var, batch mean, invstd, dgamma, dbeta
  for (int fused = 0; fused < 2; ++fused) {
    HostTensor rm(Shape{c}, 0.1f), rv(Shape{c}, 1.5f), mean(Shape{c}), invstd(Shape{c});
    HostTensor dgamma(Shape{c}), dbeta(Shape{c});
    const ops::BatchNormParams p{.relu = fused == 1};
    if (fused) {
      ops::batch_norm_forward_train(ctx, x.t(), gamma.t(), beta.t(), rm.t(), rv.t(), p, y[1].t(),
                                    mean.t(), invstd.t());
      ops::batch_norm_backward(ctx, x.t(), dy.t(), gamma.t(), mean.t(), invstd.t(), dx[1].t(),
                               ops::GradMode::Accumulate, dgamma.t(), dbeta.t(),
                               {.output = y[1].t()});
      ops::batch_norm_forward_eval(ctx, x.t(), gamma.t(), beta.t(), rm.t(), rv.t(), p, eval[1].t());
    } else {
      ops::batch_norm_forward_train(ctx, x.t(), gamma.t(), beta.t(), rm.t(), rv.t(), p, bn_y.t(),
                                    mean.t(), invstd.t());
      ops::relu_forward(ctx, bn_y.t(), y[0].t());
      ops::relu_backward(ctx, y[0].t(), dy.t(), open_dy.t(), ops::GradMode::Overwrite);
      ops::batch_norm_backward(ctx, x.t(), open_dy.t(), gamma.t(), mean.t(), invstd.t(), dx[0].t(),
                               ops::GradMode::Accumulate, dgamma.t(), dbeta.t());
      ops::batch_norm_forward_eval(ctx, x.t(), gamma.t(), beta.t(), rm.t(), rv.t(), p, bn_y.t());
      ops::relu_forward(ctx, bn_y.t(), eval[0].t());
    }
    for (const HostTensor* t : {&rm, &rv, &mean, &invstd, &dgamma, &dbeta})
      for (int64_t j = 0; j < c; ++j) statistics[fused].push_back((*t)[j]);
  }
  CHECK(statistics[0] == statistics[1]);
  for (int64_t i = 0; i < x.numel(); ++i) {
    REQUIRE(y[0][i] == y[1][i]);
    REQUIRE(dx[0][i] == dx[1][i]);
    REQUIRE(eval[0][i] == eval[1][i]);
  }
}

TEST_CASE(
    "batch norm + ReLU backward recomputes the ReLU's mask from x to the bit, at outputs on 0") {
  Context ctx(Device::CPU, 2);
  // Planes of 35 values written the ordinary way, of 1,221 streamed in chunks.
  check_relu_mask_on_zero(ctx, {Shape{4, 16, 5, 7}, Shape{2, 16, 33, 37}}, BothSidesIn::EachShape);
  HostTensor x(Shape{2, 3, 2, 2}), c3(Shape{3});
  CHECK_THROWS_WITH_AS(ops::batch_norm_backward(ctx, x.t(), x.t(), c3.t(), c3.t(), c3.t(), Tensor{},
                                                ops::GradMode::Overwrite, c3.t(), c3.t(),
                                                {.output = x.t(), .beta = c3.t()}),
                       doctest::Contains("from its output or from beta, not both"), Error);
}

TEST_CASE("add with its ReLU fused equals add then ReLU") {
  Context ctx(Device::CPU, 2);
  HostTensor a(Shape{2, 3, 4, 5}), b(a.t().shape), y(a.t().shape), sum(a.t().shape),
      relu(a.t().shape);
  fill_uniform(a.t(), -1, 1, 6, 0);
  fill_uniform(b.t(), -1, 1, 6, 1);
  ops::add_relu_forward(ctx, a.t(), b.t(), y.t());
  ops::add_forward(ctx, a.t(), b.t(), sum.t());
  ops::relu_forward(ctx, sum.t(), relu.t());
  for (int64_t i = 0; i < a.numel(); ++i) REQUIRE(y[i] == relu[i]);
}

TEST_CASE("synchronised batch norm: stages over two shards equal one BN over the whole batch") {
  Context ctx(Device::CPU, 2);
  const int64_t n = 6, c = 3, h = 4, w = 5, half = n / 2 * c * h * w;
  HostTensor x(Shape{n, c, h, w}), dy(x.t().shape), gamma(Shape{c}), beta(Shape{c});
  fill_uniform(x.t(), 2, 7, 3, 0);  // a mean well away from zero, as conv outputs can have
  fill_uniform(dy.t(), -1, 1, 3, 1);
  fill_uniform(gamma.t(), 0.5, 2, 3, 2);
  fill_uniform(beta.t(), -1, 1, 3, 3);
  // One BN over the batch.
  HostTensor rm(Shape{c}, 4.0f), rv(Shape{c}, 1.0f), mean(Shape{c}), invstd(Shape{c});
  HostTensor y(x.t().shape), dx(x.t().shape), dgamma(Shape{c}), dbeta(Shape{c});
  ops::batch_norm_forward_train(ctx, x.t(), gamma.t(), beta.t(), rm.t(), rv.t(), {}, y.t(),
                                mean.t(), invstd.t());
  ops::batch_norm_backward(ctx, x.t(), dy.t(), gamma.t(), mean.t(), invstd.t(), dx.t(),
                           ops::GradMode::Overwrite, dgamma.t(), dbeta.t());
  // Two shards, as two ranks would run it, with their float64 sums added between the stages.
  const Shape shard_shape{n / 2, c, h, w};
  const auto shard = [&](const HostTensor& t, int i) {
    return Tensor(const_cast<float*>(t.t().f32()) + i * half, shard_shape, Device::CPU);
  };
  std::vector<double> total(2 * c), part(2 * c);
  const Tensor total_t(total.data(), Shape{2, c}, Device::CPU),
      part_t(part.data(), Shape{2, c}, Device::CPU);
  HostTensor srm(Shape{c}, 4.0f), srv(Shape{c}, 1.0f), smean(Shape{c}), sinvstd(Shape{c});
  for (int i = 0; i < 2; ++i) {
    ops::batch_norm_moments(ctx, shard(x, i), srm.t(), part_t);
    for (int64_t j = 0; j < 2 * c; ++j) total[j] += part[j];
  }
  ops::batch_norm_stats(ctx, srm.t(), total_t, n * h * w, {}, srm.t(), srv.t(), smean.t(),
                        sinvstd.t());
  HostTensor sy(x.t().shape), sdx(x.t().shape, 7.0f), pg(Shape{c}), pb(Shape{c}), gsum(Shape{c});
  std::fill(total.begin(), total.end(), 0.0);
  for (int i = 0; i < 2; ++i) {
    ops::batch_norm_normalize(ctx, shard(x, i), gamma.t(), beta.t(), smean.t(), sinvstd.t(),
                              shard(sy, i));
    ops::batch_norm_backward_reduce(ctx, shard(x, i), shard(dy, i), smean.t(), sinvstd.t(), part_t,
                                    pg.t(), pb.t());
    for (int64_t j = 0; j < 2 * c; ++j) total[j] += part[j];
    for (int64_t j = 0; j < c; ++j) gsum[j] += pg[j];
  }
  for (int i = 0; i < 2; ++i)
    ops::batch_norm_backward_input(ctx, shard(x, i), shard(dy, i), gamma.t(), smean.t(),
                                   sinvstd.t(), total_t, n * h * w, shard(sdx, i),
                                   ops::GradMode::Overwrite);
  for (int64_t j = 0; j < c; ++j) {
    CHECK(smean[j] == doctest::Approx(mean[j]).epsilon(1e-6));
    CHECK(sinvstd[j] == doctest::Approx(invstd[j]).epsilon(1e-6));
    CHECK(srm[j] == doctest::Approx(rm[j]).epsilon(1e-6));
    CHECK(srv[j] == doctest::Approx(rv[j]).epsilon(1e-6));
    CHECK(total[j] == doctest::Approx(dbeta[j]).epsilon(1e-6));
    CHECK(gsum[j] == doctest::Approx(dgamma[j]).epsilon(1e-6));
  }
  double worst_y = 0, worst_dx = 0, dx_scale = 0;
  for (int64_t i = 0; i < x.numel(); ++i) {
    worst_y = worse_difference(worst_y, sy[i], y[i]);
    worst_dx = worse_difference(worst_dx, sdx[i], dx[i]);
    dx_scale = std::max(dx_scale, std::abs(double(dx[i])));
  }
  CHECK(worst_y < 1e-5);
  CHECK(worst_dx < 1e-6 * dx_scale);
}

TEST_CASE("max pooling: ties go to the first element, NaN propagates") {
  Context ctx(Device::CPU, 1);
  HostTensor x(Shape{1, 1, 2, 4}), y(Shape{1, 1, 1, 2}), dy(Shape{1, 1, 1, 2}, 1.0f);
  HostTensor dx(x.t().shape);
  x[0] = 5, x[1] = 5, x[4] = 5, x[5] = 1;  // window 0: a three-way tie at 5
  x[2] = 1, x[3] = std::numeric_limits<float>::quiet_NaN(), x[6] = 9, x[7] = 2;
  ops::max_pool_forward(ctx, x.t(), {2, 2}, y.t());
  ops::max_pool_backward(ctx, x.t(), dy.t(), {2, 2}, dx.t(), ops::GradMode::Overwrite);
  CHECK(y[0] == 5.0f);
  CHECK(std::isnan(y[1]));
  CHECK(dx[0] == 1.0f);
  CHECK(dx[1] == 0.0f);
  CHECK(dx[4] == 0.0f);
  CHECK(dx[3] == 1.0f);
}

TEST_CASE("max pooling over tiling windows: long rows, tails, ties and NaNs as a scan finds them") {
  // Windows of 2 (the compiled-in size) and 3, rows of more windows than one run of the backward
  // holds (64), a row and a column past the last window. Values from a few levels, so that ties
  // are common, and NaNs at a few places.
  for (const int k : {2, 3}) {
    const int64_t h = 2 * k + 1, w = 70 * k + 1, p = h / k, q = w / k;
    Context ctx(Device::CPU, 2);
    HostTensor x(Shape{2, 3, h, w}), y(Shape{2, 3, p, q}), dy(y.t().shape);
    fill_uniform(x.t(), 0.0f, 4.0f, 11, static_cast<uint64_t>(k));
    for (int64_t i = 0; i < x.numel(); ++i) x[i] = std::floor(x[i]);
    for (const int64_t i : {int64_t{5}, w + 8, 3 * w + 70, x.numel() - w - 3})
      x[i] = std::numeric_limits<float>::quiet_NaN();
    fill_uniform(dy.t(), -1.0f, 1.0f, 12, 0);
    ops::max_pool_forward(ctx, x.t(), {k, k}, y.t());
    for (const auto mode : {ops::GradMode::Overwrite, ops::GradMode::Accumulate}) {
      const bool accumulate = mode == ops::GradMode::Accumulate;
      HostTensor dx(x.t().shape, 0.5f), expected(x.t().shape, accumulate ? 0.5f : 0.0f);
      ops::max_pool_backward(ctx, x.t(), dy.t(), {k, k}, dx.t(), mode);
      int64_t mismatched_y = 0;
      for (int64_t plane = 0; plane < 6; ++plane) {
        for (int64_t wp = 0; wp < p; ++wp) {
          for (int64_t wq = 0; wq < q; ++wq) {
            int64_t best = -1;  // the window's first NaN, else its first maximum
            for (int64_t e = 0; e < k * k; ++e) {
              const int64_t at = (plane * h + wp * k + e / k) * w + wq * k + e % k;
              if (best >= 0 && std::isnan(x[best])) break;
              if (best < 0 || x[at] > x[best] || std::isnan(x[at])) best = at;
            }
            const int64_t out = (plane * p + wp) * q + wq;
            const bool same = std::isnan(x[best]) ? std::isnan(y[out]) : y[out] == x[best];
            mismatched_y += same ? 0 : 1;
            expected[best] += dy[out];
          }
        }
      }
      CHECK(mismatched_y == 0);
      int64_t mismatched_dx = 0;
      for (int64_t i = 0; i < x.numel(); ++i) mismatched_dx += dx[i] == expected[i] ? 0 : 1;
      INFO("k ", k, ", accumulate ", accumulate);
      CHECK(mismatched_dx == 0);
    }
  }
}

TEST_CASE("softmax cross-entropy: value, fused gradient and label checks") {
  Context ctx(Device::CPU, 1);
  HostTensor logits(Shape{3, 7}), dlogits(Shape{3, 7}), loss(Shape{1});
  fill_uniform(logits.t(), -4, 4, 5, 0);
  std::vector<int32_t> labels = {6, 0, 3};
  ops::softmax_cross_entropy(ctx, logits.t(), labels_of(labels), loss.t(), dlogits.t());
  const auto reference = [&] {
    double total = 0.0;
    for (int i = 0; i < 3; ++i) {
      double z = 0.0;
      for (int j = 0; j < 7; ++j) z += std::exp(double(logits[i * 7 + j]));
      total += std::log(z) - logits[i * 7 + labels[i]];
    }
    return total / 3.0;
  };
  CHECK(loss[0] == doctest::Approx(reference()).epsilon(1e-6));
  for (int i = 0; i < 21; ++i) {  // central differences of the double-precision reference
    const float saved = logits[i];
    logits[i] = saved + 1e-2f;
    const double up = reference();
    logits[i] = saved - 1e-2f;
    const double down = reference();
    logits[i] = saved;
    CHECK(dlogits[i] == doctest::Approx((up - down) / 2e-2).epsilon(1e-3));
  }
  std::vector<int32_t> bad = {6, 7, 0};
  CHECK_THROWS_WITH_AS(
      ops::softmax_cross_entropy(ctx, logits.t(), labels_of(bad), loss.t(), dlogits.t()),
      doctest::Contains("label 7 of sample 1 is outside [0, 7)"), Error);
}

TEST_CASE("top-k accuracy counts ties against the label") {
  Context ctx(Device::CPU, 1);
  HostTensor logits(Shape{3, 4});
  const float rows[] = {0, 3, 1, 2, /**/ 5, 5, 0, 0, /**/ 1, 2, 3, 4};
  for (int i = 0; i < 12; ++i) logits[i] = rows[i];
  std::vector<int32_t> labels = {1, 0, 1};
  CHECK(ops::topk_correct(ctx, logits.t(), labels_of(labels), 1) == 1);
  CHECK(ops::topk_correct(ctx, logits.t(), labels_of(labels), 2) == 2);
  CHECK(ops::topk_correct(ctx, logits.t(), labels_of(labels), 3) == 3);
}

TEST_CASE("metrics summed over batches: loss times rows, top-1, top-5, rows") {
  Context ctx(Device::CPU, 1);
  // Labels: first; tied for first (a tie counts against the label); 5th; 6th of 7.
  HostTensor logits(Shape{4, 7});
  const float rows[] = {9, 8, 7, 6, 5, 0, 4, /**/ 1, 1, 0, 0, 0, 0,  0,
                        5, 6, 7, 8, 4, 1, 0, /**/ 5, 6, 7, 8, 9, 10, 0};
  for (int i = 0; i < 28; ++i) logits[i] = rows[i];
  std::vector<int32_t> labels = {0, 0, 4, 0};
  HostTensor loss(Shape{1}, 2.0f);
  std::vector<double> totals(ops::kMetricFields, 0.0);
  const Tensor t(totals.data(), Shape{ops::kMetricFields}, Device::CPU);
  for (int batch = 0; batch < 2; ++batch)
    ops::accumulate_metrics(ctx, logits.t(), labels_of(labels), loss.t(), t);
  CHECK(totals[ops::kMetricLossSum] == 16.0);
  CHECK(totals[ops::kMetricCorrect] == 2.0);
  CHECK(totals[ops::kMetricCorrectTop5] == 6.0);
  CHECK(totals[ops::kMetricSamples] == 8.0);
}

TEST_CASE("dropout: a mask index in device memory draws the mask of the explicit stream") {
  Context ctx(Device::CPU, 2);
  HostTensor x(Shape{3, 4, 5}), explicit_y(x.t().shape), indexed_y(x.t().shape);
  fill_uniform(x.t(), -1, 1, 8, 0);
  int32_t index = -1;  // before the first forward
  const Tensor counter(&index, Shape{1}, Device::CPU);
  ops::count_up(ctx, counter);
  CHECK(index == 0);
  ops::count_up(ctx, counter);
  ops::dropout_forward(ctx, x.t(), 0.4f, 5, (uint64_t{7} << 32) | 1, explicit_y.t());
  ops::dropout_forward(ctx, x.t(), 0.4f, 5, uint64_t{7} << 32, indexed_y.t(), counter);
  for (int64_t i = 0; i < x.numel(); ++i) REQUIRE(indexed_y[i] == explicit_y[i]);
}

TEST_CASE("dropout: drop rate, scaling and determinism of the counter-based mask") {
  Context ctx(Device::CPU, 2);
  HostTensor x(Shape{4, 8, 16, 16}, 1.0f), y(x.t().shape), y2(x.t().shape), y3(x.t().shape);
  ops::dropout_forward(ctx, x.t(), 0.5f, 11, 1, y.t());
  ops::dropout_forward(ctx, x.t(), 0.5f, 11, 1, y2.t());
  ops::dropout_forward(ctx, x.t(), 0.5f, 11, 2, y3.t());
  int64_t dropped = 0, same = 0, differ = 0;
  for (int64_t i = 0; i < x.numel(); ++i) {
    REQUIRE((y[i] == 0.0f || y[i] == 2.0f));
    dropped += y[i] == 0.0f;
    same += y[i] == y2[i];
    differ += y[i] != y3[i];
  }
  CHECK(same == x.numel());
  const double rate = double(dropped) / x.numel();  // 8192 draws: 5 sigma is 0.028
  CHECK(rate == doctest::Approx(0.5).epsilon(0.06));
  CHECK(differ > x.numel() / 3);
  ops::dropout_forward(ctx, x.t(), 0.0f, 11, 1, y.t());
  CHECK(y[17] == 1.0f);
}
