// Winograd's minimal filtering F(2x2, 3x3) for the 3x3 convolutions at stride 1 padded by one
// pixel (ResNet's and VGG's) on planes of even height and width: forward, data gradient and
// filter gradient.
//
// Each 2x2 block of outputs (a tile) comes from the 4x4 patch of padded input around it as
// Y = A^T [(G g G^T) . (B^T d B)] A: the filter and the patch are transformed into 16 points
// each, multiplied point by point, and the 16 products transformed back. Over C input channels
// the point-wise products become 16 matrix products, U (K, C) by V (C, tiles) per point, with
// 16 multiplications per tile and channel pair where the direct method takes 36 (2.25x fewer).
// The transforms are additions and halvings; the products run in the same register tiles as
// the direct method's, vectorised over tiles. A block of consecutive tile rows (crossing images)
// is transformed, multiplied and transformed back while it is in L2. The filter gradient turns
// the same transforms around (see filter_gradient). psgd takes it where both sides have at
// least 32 channels (ResNet's second and third stages, VGG16-bn after its first layer); without
// AVX-512, forward and data gradient from 16 on rows of 4, 8 or 16 tiles, whose input transform
// runs in registers (ResNet's first stage); with AVX-512, the filter gradient from 64. With
// fewer, the transforms cost more than the multiplications they save (BENCHMARKS.md).
//
// Every tile's arithmetic is its own, in a fixed order: the forward and data gradient do not
// depend on the batch, the blocks or the threads. The rounding differs from the direct sum by
// the transforms' few additions (a small multiple of float32's epsilon on the sum of the
// products' magnitudes).
#pragma once

#include <cstdint>

#include "kernels/cpu/conv2d_direct.h"

namespace psgd::cpu::winograd {

using direct::Geometry;

// The forward convolution, y (N, K, H, W) = conv(x, w) with w (K, C, 3, 3); the data gradient,
// dx (N, C, H, W) from dy (N, K, H, W): the forward convolution of dy with the filters
// transposed and turned by 180 degrees, in the same geometry; or the filter gradient.
enum class Direction { Forward, DataGradient, FilterGradient };

// Whether F(2x2, 3x3) computes this convolution in this direction: 3x3 filters at stride 1
// padded by 1, even planes of at least 4x4, and at least 32 channels on both sides (without
// AVX-512: forward and data gradient from 16 on planes 8, 16 or 32 wide; with AVX-512: the filter
// gradient from 64).
bool computes(const Geometry& g, Direction direction);

int64_t workspace_floats(int threads, const Geometry& g, Direction direction);

// out = the convolution of `in` (x, or dy) with w (K, C, 3, 3) in `direction` (Forward or
// DataGradient), or += when accumulate. ws holds workspace_floats floats.
void convolve(int threads, const float* in, const float* w, const Geometry& g, Direction direction,
              float* out, bool accumulate, float* ws);

// dw (K, C, 3, 3) = the sum over images of dy (N, K, H, W) correlated with x (N, C, H, W), as
// dw = G^T [sum over tiles of (A dy A^T) . (B^T x B)] G (Winograd's F(3x3, 2x2), the same
// transforms turned around): per point one matrix product (K, tiles) by (tiles, C) summed over
// the tiles. Deterministic for a given team: each thread sums a contiguous share of the blocks,
// and the partial sums are added in thread order.
void filter_gradient(int threads, const float* x, const float* dy, const Geometry& g, float* dw,
                     float* ws);

}  // namespace psgd::cpu::winograd
