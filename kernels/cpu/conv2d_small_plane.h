// Convolutions on planes so small that every output reads every input pixel through some filter
// tap (VGG16-bn's 2x2 planes under 3x3 filters padded by 1): the convolution is then a dense
// linear map from an image's C * H * W values to its K * P * Q outputs, and the batch one matrix
// product with that map, W (K*P*Q, C*H*W). The im2col GEMM multiplies the padding too: 9 taps
// per output where a 2x2 plane has 4 pixels, 2.25x the arithmetic.
#pragma once

#include <cstdint>

#include "kernels/cpu/conv2d_direct.h"

namespace psgd::cpu::small_plane {

using direct::Geometry;

// Whether every output of this convolution reads every input pixel (stride 1).
bool computes(const Geometry& g);

// W's floats, and also dW's.
int64_t workspace_floats(const Geometry& g);

// y (N, K, P, Q) = x (N, C*H*W) . W^T, OpenBLAS's threads splitting the product.
void forward(const float* x, const float* w, const Geometry& g, float* y, float* ws);

// dx (N, C*H*W) = dy (N, K*P*Q) . W, or += when accumulate.
void data_gradient(const float* dy, const float* w, const Geometry& g, float* dx, bool accumulate,
                   float* ws);

// dW = dy^T . x summed over the batch, then each filter tap the sum of dW's entries it makes.
void filter_gradient(const float* x, const float* dy, const Geometry& g, float* dw, float* ws);

}  // namespace psgd::cpu::small_plane
