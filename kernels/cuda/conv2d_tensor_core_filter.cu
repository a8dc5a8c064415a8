// The filter gradient of psgd's tensor-core 3x3 convolution (stride 1 or 2, padding 1; output
// widths multiples of 8): dw[o][c][r][s] = the sum over output pixels p of dy[o][p] times x[c] at
// stride p + (r - 1, s - 1), for each tap a product (outputs x pixels) times (pixels x input
// channels) in TF32 mma.sync. conv2d (conv2d_cudnn.cpp) races it against cuDNN's choice once per
// shape. Deterministic: the pixels are split into slabs, each block sums its slab's products in a
// fixed order into a partial filter gradient of its own in the workspace, and a second kernel
// adds the slabs' partial sums, again in a fixed order.
//
// A block takes a slab of output pixels, 8 input channels and up to 32 output channels; its 3
// warps each take one row r of the filter (3 taps) for all of them. Per 128 pixels it stages dy
// (rounded to TF32) and, as the forward kernel does, the input rows under them; each 8 pixels,
// which lie in one row as the width is a multiple of 8, are one k-step, skipped by the warps whose
// filter row would read outside the image.
#include <algorithm>
#include <type_traits>

#include "kernels/cuda/conv2d_tensor_core.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace psgd::cuda {
namespace {

using namespace tensor_core;

constexpr int kRowWarps = 3;  // a warp per filter row
constexpr int kFilterThreads = 32 * kRowWarps;
constexpr int kLanePixels = kTilePixels / 32;  // pixels of a tile a lane stages dy for
constexpr int kOutputTiles = 2;                // 16-row tiles of outputs (the mma's M) per block
constexpr int kGroup = 16 * kOutputTiles;      // output channels per block
// Strides 4 modulo 32: a fragment's eight rows g then fall in distinct banks.
constexpr int kGradStride = padded_stride(kTilePixels, 4);
constexpr int64_t kTargetBlocks = 1024;  // about a wave: ~8 resident per SM on an H100's 132
// The second pass: a block sums 8 weights, 32 threads side by side per weight, each over every
// 32nd slab, so that even a few thousand weights fill the GPU.
constexpr int kSumThreads = 256;
constexpr int kSumLanes = 32;
constexpr int kSumWeights = kSumThreads / kSumLanes;

struct FilterDims {
  InputRows in;
  OutputRows out;  // its pixels are the products' k
  int outputs;
  Staging staging;
  int tiles_per_slab;  // 128-pixel tiles per block
  int64_t weights;     // outputs * inputs * 9: one slab's partial sums
};

// Staged channels 4 modulo 32 apart: the eight n-columns g of a B fragment fall in distinct banks.
Staging staging_of(const Shape& x, const OutputRows& o) {
  return staging_for(x, o, 4);
}

// dy of a tile ([output][pixel]), then the staged input rows.
size_t shared_bytes(const Staging& s) {
  return sizeof(float) * (size_t{kGroup} * kGradStride + kStep * size_t(s.channel_stride));
}

// The slabs the pixels are split into: enough blocks to fill the GPU, but partial sums that stay
// under half the layer's activations counted in float32 (written, then read by the second pass).
struct Slabs {
  int64_t count;
  int tiles_per_slab;
};

Slabs slabs_for(const Shape& x, const Shape& w, int stride) {
  const int64_t pixels = x.numel() == 0 ? 0 : output_rows(x, stride).pixels;
  const int64_t tiles = (pixels + kTilePixels - 1) / kTilePixels;
  const int64_t blocks_per_slab = ((w[1] + kStep - 1) / kStep) * ((w[0] + kGroup - 1) / kGroup);
  const int64_t weights = w[0] * w[1] * kTaps;
  if (tiles == 0 || weights == 0) return {0, 1};
  const int64_t wanted =
      std::min(kTargetBlocks / blocks_per_slab, pixels * (w[0] + w[1]) / (2 * weights));
  const int64_t per_slab =
      (tiles + std::clamp<int64_t>(wanted, 1, tiles) - 1) / std::clamp<int64_t>(wanted, 1, tiles);
  return {(tiles + per_slab - 1) / per_slab, static_cast<int>(per_slab)};
}

template <class T>
__global__ void __launch_bounds__(kFilterThreads)
    conv3x3_mma_filter_kernel(const T* __restrict__ x, const T* __restrict__ dy,
                              float* __restrict__ partials, FilterDims d) {
  await_prior_grids();
  const InputRows& rows = d.in;
  const OutputRows& out = d.out;
  float* grads = dynamic_shared<float>();
  float* inputs = grads + kGroup * kGradStride;
  const int line_stride = rows.w + 2;
  const int64_t plane = int64_t{out.h} * out.w;
  const int c0 = blockIdx.y * kStep, first_output = blockIdx.z * kGroup;
  const int output_tiles = min(kOutputTiles, (d.outputs - first_output + 15) / 16);
  const int r = threadIdx.x / 32, lane = threadIdx.x % 32;  // r: the warp's filter row
  const int g = lane / 4, t = lane % 4;

  float sums[kOutputTiles][3][4] = {};
  const int64_t slab_pixel = blockIdx.x * int64_t{d.tiles_per_slab} * kTilePixels;
  for (int tile = 0; tile < d.tiles_per_slab; ++tile) {
    const int64_t first_pixel = slab_pixel + int64_t{tile} * kTilePixels;
    if (first_pixel >= out.pixels) break;
    // The input row above the one under the tile's first output row.
    const int64_t first_line =
        out.stride * int64_t{out.by_w.divide(static_cast<uint32_t>(first_pixel))} - 1;
    __syncthreads();  // the last tile's fragments are read
    // dy of the tile: the lane's pixels lane + 32 u of every third output from the warp's row,
    // their offsets in dy found once per tile, not per output.
    int64_t at[kLanePixels];
#pragma unroll
    for (int u = 0; u < kLanePixels; ++u) {
      const int64_t p = first_pixel + lane + 32 * u;
      const int64_t image = out.by_plane.divide(static_cast<uint32_t>(p));
      at[u] =
          p < out.pixels ? (image * d.outputs + first_output) * plane + (p - image * plane) : -1;
    }
    for (int o = r; o < kGroup; o += kRowWarps) {
      const bool has_output = first_output + o < d.outputs;
#pragma unroll
      for (int u = 0; u < kLanePixels; ++u) {
        const float v = has_output && at[u] >= 0 ? load(dy, at[u] + o * plane) : 0.0f;
        grads[o * kGradStride + lane + 32 * u] = round_to_tf32(v);
      }
    }
    stage_rows(x, rows, d.staging, c0, first_line, inputs);
    __syncthreads();

    for (int k = 0; k < kTilePixels; k += 8) {
      const int64_t p = first_pixel + k;
      if (p >= out.pixels) break;
      const uint32_t line = out.by_w.divide(static_cast<uint32_t>(p));
      const int row = static_cast<int>(line - out.h * out.by_h.divide(line));
      if ((r == 0 && row == 0) || (r == 2 && out.stride * row + 1 >= rows.h)) continue;
      float a[kOutputTiles][4];
#pragma unroll
      for (int m = 0; m < kOutputTiles; ++m) {
        const float* src = grads + (16 * m + g) * kGradStride + k + t;
        a[m][0] = src[0];
        a[m][1] = src[8 * kGradStride];
        a[m][2] = src[4];
        a[m][3] = src[8 * kGradStride + 4];
      }
      // Pixel k + t's input at the warp's filter row and tap s = 0 (one column left).
      const float* src = inputs + g * d.staging.channel_stride +
                         static_cast<int>(out.stride * line - first_line + r - 1) * line_stride +
                         out.stride * (static_cast<int>(p - line * out.w) + t);
#pragma unroll
      for (int s = 0; s < 3; ++s) {
        const float b[2] = {src[s], src[4 * out.stride + s]};
#pragma unroll
        for (int m = 0; m < kOutputTiles; ++m)
          if (m < output_tiles) mma_m16n8k8_tf32(sums[m][s], a[m], b);
      }
    }
  }

  // D's rows are outputs, its columns input channels: (g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1).
  float* slab_sums = partials + blockIdx.x * d.weights;
#pragma unroll
  for (int m = 0; m < kOutputTiles; ++m)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int output = first_output + 16 * m + g + 8 * (e / 2), input = c0 + 2 * t + e % 2;
      if (output >= d.outputs || input >= rows.channels) continue;
#pragma unroll
      for (int s = 0; s < 3; ++s)
        slab_sums[(int64_t{output} * rows.channels + input) * kTaps + 3 * r + s] = sums[m][s][e];
    }
}

// dw[i] = the sum of the slabs' partial sums of weight i, in a fixed order; rounded to bf16
// precision for bf16 activations, as cuDNN's bf16 filter gradient and the CPU's are.
__global__ void __launch_bounds__(kSumThreads)
    sum_slabs(const float* __restrict__ partials, int64_t slabs, int64_t weights,
              bool bf16_precision, float* __restrict__ dw) {
  await_prior_grids();
  __shared__ float lanes[kSumLanes][kSumWeights];
  const int column = threadIdx.x % kSumWeights, lane = threadIdx.x / kSumWeights;
  const int64_t i = blockIdx.x * int64_t{kSumWeights} + column;
  float sum = 0.0f;
  if (i < weights) {
#pragma unroll 4
    for (int64_t slab = lane; slab < slabs; slab += kSumLanes) sum += partials[slab * weights + i];
  }
  lanes[lane][column] = sum;
  __syncthreads();
  if (lane != 0 || i >= weights) return;
  for (int l = 1; l < kSumLanes; ++l) sum += lanes[l][column];
  dw[i] = bf16_precision ? to_float(to_bf16(sum)) : sum;
}

template <class T>
void launch(const Tensor& x, const Tensor& dy, const Shape& w_shape, int stride,
            const Tensor& partials, const Tensor& dw) {
  const Slabs slabs = slabs_for(x.shape, w_shape, stride);
  if (slabs.count == 0) {  // no pixels (or no weights): a gradient of zeros
    float* out = dw.f32();
    for_each(dw.numel(), [=] __device__(int64_t i) { out[i] = 0.0f; });
    return;
  }
  FilterDims d{};
  d.in = input_rows(x.shape);
  d.out = output_rows(x.shape, stride);
  d.outputs = static_cast<int>(w_shape[0]);
  d.staging = staging_of(x.shape, d.out);
  d.tiles_per_slab = slabs.tiles_per_slab;
  d.weights = w_shape.numel();
  const dim3 grid(static_cast<unsigned>(slabs.count),
                  static_cast<unsigned>((d.in.channels + kStep - 1) / kStep),
                  static_cast<unsigned>((d.outputs + kGroup - 1) / kGroup));
  PSGD_LAUNCH(conv3x3_mma_filter_kernel<T>, grid, kFilterThreads, shared_bytes(d.staging))
  (x.as<T>(), dy.as<T>(), partials.f32(), d);
  CUDA_CHECK_LAUNCH();
  PSGD_LAUNCH(sum_slabs, static_cast<unsigned>((d.weights + kSumWeights - 1) / kSumWeights),
              kSumThreads)
  (partials.f32(), slabs.count, d.weights, std::is_same_v<T, bf16>, dw.f32());
  CUDA_CHECK_LAUNCH();
}

}  // namespace

bool conv2d_tensor_core_filter_supported(const Shape& x, const Shape& w, ops::Conv2dGeometry g) {
  if (!geometry_served(x, w, g)) return false;
  const OutputRows out = output_rows(x, g.stride);
  return out.w % 8 == 0 && shared_bytes(staging_of(x, out)) <= kMaxSharedBytes;
}

int64_t conv2d_tensor_core_filter_workspace_floats(const Shape& x, const Shape& w, int stride) {
  return slabs_for(x, w, stride).count * w.numel();
}

void conv2d_tensor_core_backward_filter(const Tensor& x, const Tensor& dy, const Shape& w_shape,
                                        int stride, const Tensor& partials, const Tensor& dw) {
  with_activation_type(x.dtype,
                       [&](auto t) { launch<decltype(t)>(x, dy, w_shape, stride, partials, dw); });
}

}  // namespace psgd::cuda
