// psgd's 3x3 convolution (padding 1, stride 1 or 2) on tensor cores, NCHW, float32 or bf16
// activations, any numbers of channels: an implicit matrix product (output pixels x input
// channels and taps, times input channels and taps x output channels) in TF32 mma.sync.
// cuDNN's NCHW kernels ran ResNet's 16-64-channel layers at ~5 TFLOP/s on an H100, about 10x the
// time their memory traffic needs (BENCHMARKS.md); conv2d (conv2d_cudnn.cpp) races this kernel
// against cuDNN's choice and psgd's direct one once per shape and keeps the fastest. TF32 rounds
// float32 operands as cuDNN's TF32 kernels do (so strict float32 never runs it) and multiplies
// bf16 values exactly; sums are float32, each output one warp's in a fixed order (deterministic).
//
// A block computes 128 consecutive output pixels (of the flattened images x rows x columns) for
// up to 32 output channels, each of its 4 warps 32 pixels (two 16-row tiles) by the block's
// channels (up to four 8-column tiles). Per step of 8 input channels the block stages, rounded to
// TF32, the input rows under its pixels and their 3x3 neighbourhoods (zero columns either side
// for the padding) and the step's weights; each tap is then one k-step of the product, its A
// fragments the staged inputs shifted by the tap. Rows above and below a pixel's that lie in
// another image (or past the batch) read as zeros. The data gradient of stride 1 is the same
// convolution of dy with the filter transposed and turned by 180 degrees, which its taps read
// (AllTaps). The data gradient of stride 2 (a transposed convolution) splits dx's pixels by
// the parity of their row and column: each class is a convolution of dy with 1, 2 or 4 of the
// filter's taps (ParityTaps), one class per blockIdx.z. The filter gradient is
// conv2d_tensor_core_filter.cu.
#include <type_traits>

#include "kernels/cuda/conv2d_tensor_core.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace psgd::cuda {
namespace {

using namespace tensor_core;

constexpr int kWarps = 4;
constexpr int kBlockThreads = 32 * kWarps;
constexpr int kTileRows = 16;                                   // the mma's M: pixels per tile
constexpr int kWarpTiles = kTilePixels / (kWarps * kTileRows);  // pixel tiles per warp
constexpr int kGroupTiles = 4;           // output-channel tiles of 8 (the mma's N) per block
constexpr int kGroup = 8 * kGroupTiles;  // output channels per block
// The staged weights are rows (input channel, filter tap) of the block's outputs, at an odd stride:
// a fragment's loads (rows 9t + tap) meet in at most two ways, the forward's staging stores in
// two where a warp's run crosses from one output to the next (the data gradient's in four).
constexpr int kWeightStride = padded_stride(kGroup, 1);

// Needed bits of a pixel's flags for the tap rows above, at and below it.
constexpr int kInRange = 1, kHasAbove = 2, kHasBelow = 4;

struct TensorCoreDims {
  InputRows in;
  OutputRows out;  // its pixels are the product's rows
  int outputs;
  Staging staging;
};

// A tap of a pixel's sum: the staged input it reads, rows and columns from the pixel's own, and
// the filter tap it multiplies (3 kh + kw).
struct Tap {
  int dr, ds, f;
};

// The forward convolution's taps and those of the data gradient of stride 1: all nine around the
// pixel, the filter transposed and turned by 180 degrees for the data gradient.
struct AllTaps {
  bool transposed;
  __device__ int count() const { return kTaps; }
  __device__ Tap operator()(int k) const {
    const int r = k / 3, s = k % 3;
    return {r - 1, s - 1, transposed ? kTaps - 1 - k : k};
  }
  // Where the output of pixel `within` of an image goes among its image's outputs.
  __device__ int64_t placed(int64_t within, const OutputRows&) const { return within; }
  __device__ int64_t output_plane(const OutputRows& o) const { return int64_t{o.h} * o.w; }
};

// The data gradient of stride 2, for the dx pixels of one parity class (py, px) = blockIdx.z's
// bits: the block's pixels are dy's, and dx pixel (2a + py, 2b + px) sums dy pixels (a + i, b + j)
// for i <= py, j <= px times the transposed filter's tap (py ? 2 - 2i : 1, px ? 2 - 2j : 1), as
// dx row 2a + py takes dy row (2a + py + 1 - kh) / 2 where that is whole.
struct ParityTaps {
  static constexpr bool transposed = true;
  __device__ int py() const { return static_cast<int>(blockIdx.z) >> 1; }
  __device__ int px() const { return static_cast<int>(blockIdx.z) & 1; }
  __device__ int count() const { return (1 + py()) * (1 + px()); }
  __device__ Tap operator()(int k) const {
    const int i = px() ? k >> 1 : k, j = px() ? k & 1 : 0;
    return {i, j, 3 * (py() ? 2 - 2 * i : 1) + (px() ? 2 - 2 * j : 1)};
  }
  __device__ int64_t placed(int64_t within, const OutputRows& o) const {
    const int a = static_cast<int>(o.by_w.divide(static_cast<uint32_t>(within)));
    const int b = static_cast<int>(within) - a * o.w;
    return (2 * int64_t{a} + py()) * (2 * o.w) + 2 * b + px();
  }
  __device__ int64_t output_plane(const OutputRows& o) const { return 4 * int64_t{o.h} * o.w; }
};

// Staged channels 8 modulo 32 apart: the four k-rows t of an A fragment fall in distinct banks.
Staging staging_of(const Shape& x, const OutputRows& o) {
  return staging_for(x, o, 8);
}

// The staged inputs of a step ([channel][row][column]), then its weights ([channel][tap][output]).
size_t shared_bytes(const Staging& s) {
  return sizeof(float) * (kStep * size_t(s.channel_stride) + kTaps * kStep * kWeightStride);
}

// Stages the step's weights of the block's first `columns` outputs, rounded to TF32, as the filter
// holds them: weights[(c * 9 + f) * kWeightStride + column] is tap f of input c0 + c to output
// first_output + column, zero past the last input or output. The filter is (outputs, inputs, 3, 3),
// or (inputs, outputs, 3, 3) when transposed: consecutive threads read consecutive floats, a
// step's 8 inputs x 9 taps per output, or the block's outputs x 9 taps per input.
template <class T>
__device__ void stage_weights(const T* __restrict__ filter, bool transposed, int inputs,
                              int outputs, int c0, int first_output, int columns, float* weights) {
  if (!transposed) {
    constexpr int kRun = kStep * kTaps;
    const int present = min(kStep, inputs - c0) * kTaps;
    for (int i = threadIdx.x; i < columns * kRun; i += kBlockThreads) {
      const int column = i / kRun, e = i - column * kRun, output = first_output + column;
      const bool reads = output < outputs && e < present;
      const float v = reads ? load(filter, (int64_t{output} * inputs + c0) * kTaps + e) : 0.0f;
      weights[e * kWeightStride + column] = round_to_tf32(v);
    }
    return;
  }
  constexpr int kRun = kGroup * kTaps;
  for (int i = threadIdx.x; i < kStep * kRun; i += kBlockThreads) {
    const int c = i / kRun, q = i - c * kRun, column = q / kTaps;
    if (column >= columns) continue;
    const bool reads = c0 + c < inputs && first_output + column < outputs;
    const float v =
        reads ? load(filter, (int64_t{c0 + c} * outputs + first_output) * kTaps + q) : 0.0f;
    weights[(c * kTaps + q - column * kTaps) * kWeightStride + column] = round_to_tf32(v);
  }
}

// At least 6 blocks per SM, so at most 80 registers, which CUDA 13's ptxas meets without spilling
// (asked for 5 blocks, it takes 88-96; the kernel's first version took 124 unbounded).
template <class T, class Taps>
__global__ void __launch_bounds__(kBlockThreads, 6)
    conv3x3_mma_kernel(const T* __restrict__ in, const T* __restrict__ filter, T* __restrict__ out,
                       TensorCoreDims d, Taps taps, bool accumulate) {
  await_prior_grids();
  const InputRows& rows = d.in;
  const OutputRows& o = d.out;
  float* inputs = dynamic_shared<float>();
  const int channel_stride = d.staging.channel_stride;
  float* weights = inputs + kStep * channel_stride;
  const int line_stride = rows.w + 2;
  const int64_t first_pixel = blockIdx.x * int64_t{kTilePixels};
  // The input row above the one under the block's first output row.
  const int64_t first_line = o.stride * (first_pixel / o.w) - 1;
  const int first_output = blockIdx.y * kGroup;
  const int group_tiles = min(kGroupTiles, (d.outputs - first_output + 7) / 8);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int g = lane / 4, t = lane % 4;
  const int tap_count = taps.count();

  // The lane's four pixels (tile m, row g or g + 8): where each sits among the staged inputs,
  // and whether it exists and has rows above and below it in its image.
  int at[kWarpTiles][2], flags[kWarpTiles][2];
#pragma unroll
  for (int m = 0; m < kWarpTiles; ++m)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int64_t p = first_pixel + (warp * kWarpTiles + m) * kTileRows + g + 8 * half;
      const bool exists = p < o.pixels;
      const int64_t line = o.by_w.divide(static_cast<uint32_t>(exists ? p : 0));
      const int row =
          static_cast<int>(line - int64_t{o.h} * o.by_h.divide(static_cast<uint32_t>(line)));
      at[m][half] = exists ? static_cast<int>(o.stride * line - first_line) * line_stride +
                                 o.stride * static_cast<int>(p - line * o.w) + 1
                           : 0;
      flags[m][half] = exists ? kInRange | (row > 0 ? kHasAbove : 0) |
                                    (o.stride * row + 1 < rows.h ? kHasBelow : 0)
                              : 0;
    }

  float sums[kWarpTiles][kGroupTiles][4] = {};
  for (int c0 = 0; c0 < rows.channels; c0 += kStep) {
    __syncthreads();  // the last step's fragments are read
    stage_rows(in, rows, d.staging, c0, first_line, inputs);
    stage_weights(filter, taps.transposed, rows.channels, d.outputs, c0, first_output,
                  8 * group_tiles, weights);
    __syncthreads();

    // A row of taps at a time: unrolling all nine needs more registers than 6 blocks per SM allow.
#pragma unroll 3
    for (int k = 0; k < tap_count; ++k) {
      const Tap tap = taps(k);
      const int shift = tap.dr * line_stride + tap.ds;
      const int need = kInRange | (tap.dr < 0 ? kHasAbove : 0) | (tap.dr > 0 ? kHasBelow : 0);
      float a[kWarpTiles][4];
#pragma unroll
      for (int m = 0; m < kWarpTiles; ++m)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const bool reads = (flags[m][half] & need) == need;
          const float* src = inputs + at[m][half] + shift;
          a[m][half] = reads ? src[t * channel_stride] : 0.0f;
          a[m][half + 2] = reads ? src[(t + 4) * channel_stride] : 0.0f;
        }
      const float* w_tap = weights + (t * kTaps + tap.f) * kWeightStride + g;
#pragma unroll
      for (int j = 0; j < kGroupTiles; ++j) {
        if (j >= group_tiles) break;
        const float b[2] = {w_tap[8 * j], w_tap[4 * kTaps * kWeightStride + 8 * j]};
#pragma unroll
        for (int m = 0; m < kWarpTiles; ++m) mma_m16n8k8_tf32(sums[m][j], a[m], b);
      }
    }
  }

  const int64_t plane = int64_t{o.h} * o.w, out_plane = taps.output_plane(o);
#pragma unroll
  for (int m = 0; m < kWarpTiles; ++m)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      if (!(flags[m][half] & kInRange)) continue;
      const int64_t p = first_pixel + (warp * kWarpTiles + m) * kTileRows + g + 8 * half;
      const int64_t image = o.by_plane.divide(static_cast<uint32_t>(p));
      T* dst =
          out + (image * d.outputs + first_output) * out_plane + taps.placed(p - image * plane, o);
#pragma unroll
      for (int j = 0; j < kGroupTiles; ++j) {
        if (j >= group_tiles) break;
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int channel = 8 * j + 2 * t + e;
          if (first_output + channel >= d.outputs) break;
          const int64_t to = channel * out_plane;
          const float v = sums[m][j][2 * half + e];
          store(dst, to, accumulate ? load(dst, to) + v : v);
        }
      }
    }
}

// Runs the kernel over the pixels of `in` seen as the output rows `o` (the forward convolution's
// output; dy's own pixels for the data gradient), computing `outputs` channels with `taps`.
template <class T, class Taps>
void launch(const Tensor& in, const void* filter, int outputs, const OutputRows& o, Taps taps,
            bool accumulate, const Tensor& out) {
  if (in.shape[0] == 0 || in.shape[2] == 0 || in.shape[3] == 0 || outputs == 0) return;
  TensorCoreDims d{};
  d.in = input_rows(in.shape);
  d.out = o;
  d.outputs = outputs;
  d.staging = staging_of(in.shape, d.out);
  const unsigned classes = std::is_same_v<Taps, ParityTaps> ? 4 : 1;
  const dim3 grid(static_cast<unsigned>((d.out.pixels + kTilePixels - 1) / kTilePixels),
                  static_cast<unsigned>((outputs + kGroup - 1) / kGroup), classes);
  PSGD_LAUNCH((conv3x3_mma_kernel<T, Taps>), grid, kBlockThreads, shared_bytes(d.staging))
  (in.as<T>(), static_cast<const T*>(filter), out.as<T>(), d, taps, accumulate);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

bool conv2d_tensor_core_available(int device) {
  int major = 0;
  CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  return major >= 8;
}

bool conv2d_tensor_core_supported(const Shape& x, const Shape& w, ops::Conv2dGeometry g) {
  return geometry_served(x, w, g) &&
         shared_bytes(staging_of(x, output_rows(x, g.stride))) <= kMaxSharedBytes;
}

bool conv2d_tensor_core_data_supported(const Shape& x, const Shape& w, ops::Conv2dGeometry g) {
  if (!geometry_served(x, w, g)) return false;
  const Shape dy = ops::conv2d_output_shape(x, w, g);  // the data gradient's pixels are dy's
  return shared_bytes(staging_of(dy, output_rows(dy, 1))) <= kMaxSharedBytes;
}

void conv2d_tensor_core_forward(const Tensor& x, const void* w, const Shape& w_shape, int stride,
                                const Tensor& y) {
  with_activation_type(x.dtype, [&](auto t) {
    launch<decltype(t)>(x, w, static_cast<int>(w_shape[0]), output_rows(x.shape, stride),
                        AllTaps{false}, false, y);
  });
}

void conv2d_tensor_core_backward_data(const Tensor& dy, const void* w, const Shape& w_shape,
                                      int stride, GradMode dx_mode, const Tensor& dx) {
  const int outputs = static_cast<int>(w_shape[1]);
  const bool accumulate = dx_mode == GradMode::Accumulate;
  PSGD_CHECK((stride == 1 || stride == 2) && dx.shape[2] == stride * dy.shape[2] &&
                 dx.shape[3] == stride * dy.shape[3],
             "tensor-core data gradient: dx ", dx.shape.str(), " is not dy ", dy.shape.str(),
             " at stride ", stride);
  const OutputRows pixels = output_rows(dy.shape, 1);
  with_activation_type(dy.dtype, [&](auto t) {
    using T = decltype(t);
    if (stride == 1) return launch<T>(dy, w, outputs, pixels, AllTaps{true}, accumulate, dx);
    launch<T>(dy, w, outputs, pixels, ParityTaps{}, accumulate, dx);
  });
}

}  // namespace psgd::cuda
