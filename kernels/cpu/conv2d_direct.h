// Convolution at stride 1 or 2 computed straight from zero-padded images, without im2col.
//
// Each image is copied once into a zero-padded buffer of width Wp = W + 2 pad. In that buffer
// every output pixel (p, q) reads its taps at p * Wp + q plus r * Wp + s. At stride 2 the copy
// splits the padded image into phase planes, its even and odd rows by its even and odd columns
// (pitch Wp / 2, rounded up): tap (r, s) then lies in phase (r % 2, s % 2) at p * pitch + q plus
// (r / 2) * pitch + s / 2, and the same loops serve, over a list of every tap's offset. The data
// gradient at stride 2 splits dx into its phases instead, each a stride-1 convolution of dy with
// its own taps, interleaved into dx (conv2d_direct.cpp). Where the output width Q is a multiple
// of the vector lanes (or half of them, on an even number of rows), each vector holds a row
// segment (or two half rows) and is written straight into y. Elsewhere the convolution runs
// along the flat buffer, vectorised over o = p * pitch + q for any width, and the columns per
// row that wrap into the padding are computed and dropped. Register tiles of output channels by
// vectors accumulate over (c, tap) with one broadcast filter tap per channel. The filter gradient
// of 3x3 filters copies x (or, at stride 1 where only the output channels are a multiple of the
// lanes, dy) with its channels last instead and vectorises over those channels, the other
// operand broadcast: an accumulator per (broadcast channel, tap) sums over a chunk of images at
// a time (conv2d_direct_filter_gradient.cpp). conv2d_direct_plane.h holds what they share.
#pragma once

#include <cstdint>

namespace psgd::cpu::direct {

inline constexpr int64_t kMaxStride = 2;

// A convolution of N images of C planes (H, W) into K planes, with filters (R, S), `pad` zeros
// on every side, and a stride.
struct Geometry {
  int64_t n, c, h, w;
  int64_t k, r, s;
  int64_t pad;
  int64_t stride = 1;  // up to kMaxStride

  int64_t out_h() const { return (h + 2 * pad - r) / stride + 1; }
  int64_t out_w() const { return (w + 2 * pad - s) / stride + 1; }
};

// Whether the direct method should compute this convolution: by rows, or along the flat plane
// where its waste is small (small planes are left to the GEMM path).
bool worthwhile(const Geometry& g);

int64_t workspace_floats(int threads, const Geometry& g);

// y (N, K, P, Q) = conv(x, w) with w (K, C, R, S). ws holds workspace_floats floats.
void convolve(int threads, const float* x, const float* w, const Geometry& g, float* y, float* ws);

// Whether data_gradient computes this convolution's dx: at stride 1 square filters with
// pad < R on worthwhile planes, at stride 2 planes and filters of at least 2 x 2 whose phases are
// worthwhile.
bool computes_data_gradient(const Geometry& g);

int64_t data_gradient_workspace_floats(int threads, const Geometry& g);

// dx (N, C, H, W) = the adjoint of the convolution applied to dy (N, K, P, Q), or += when
// accumulate.
void data_gradient(int threads, const float* dy, const float* w, const Geometry& g, float* dx,
                   bool accumulate, float* ws);

// Whether filter_gradient computes this convolution's dw: 3x3 filters, input or output channels
// a multiple of the vector lanes, worthwhile planes.
bool computes_filter_gradient(const Geometry& g);

int64_t filter_gradient_workspace_floats(int threads, const Geometry& g);

// dw (K, C, 3, 3) = the sum over images of dy (N, K, P, Q) correlated with x (N, C, H, W).
// Deterministic for a given OpenMP team: each thread takes an equal contiguous share of the
// images, and the partial sums are added in thread order.
void filter_gradient(int threads, const float* x, const float* dy, const Geometry& g, float* dw,
                     float* ws);

}  // namespace psgd::cpu::direct
