// psgd's own 3x3 convolution (stride 1, padding 1) for few channels, NCHW, float32 or bf16
// activations: ResNet's 16-64-channel layers, where cuDNN's NCHW kernels took some 10x the time
// their memory traffic needs on an H100 (BENCHMARKS.md). conv2d (conv2d_cudnn.cpp) races it against
// cuDNN's choice once per shape and keeps the faster. It computes in float32 (FMA, no TF32), so
// it serves strict float32 too, and it is deterministic: each output is one thread's sum in a
// fixed order.
//
// Each thread computes a strip of 4 pixels of one row for 8 output channels (32 sums in
// registers), reading per input channel the 3 x 6 inputs around its strip and the block's
// weights from shared memory, where every lane of a warp reads the same address (a broadcast).
// The data gradient is the same convolution of dy with the filter transposed and turned by 180
// degrees, which the weights' staging does.
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/launch.h"

namespace psgd::cuda {
namespace {

constexpr int kPixels = 4;      // a thread's outputs along a row
constexpr int kChannels = 8;    // a thread's (and its block's) output channels
constexpr int kMaxInputs = 64;  // input channels whose weights fit the shared memory
constexpr int kTaps = 9;

struct DirectDims {
  int64_t images;
  int inputs, outputs, h, w, strips;  // strips: ceil(w / kPixels) per row
  int64_t threads;                    // images * h * strips
};

// transposed: the data gradient's convolution (the filter is (inputs, outputs) there, read turned).
template <class T>
__global__ void __launch_bounds__(kThreads, 2)
    conv3x3_kernel(const T* __restrict__ in, const T* __restrict__ filter, T* __restrict__ out,
                   DirectDims d, bool transposed, bool accumulate) {
  await_prior_grids();
  // The block's weights as [input][tap][output channel], zero past the last output channel.
  float* weights = dynamic_shared<float>();
  const int first_output = blockIdx.y * kChannels;
  for (int i = threadIdx.x; i < d.inputs * kTaps * kChannels; i += blockDim.x) {
    const int o = first_output + i % kChannels, tap = i / kChannels % kTaps,
              c = i / (kTaps * kChannels);
    float v = 0.0f;
    if (o < d.outputs) {
      const int r = tap / 3, s = tap % 3;
      v = transposed ? load(filter, ((int64_t{c} * d.outputs + o) * 3 + 2 - r) * 3 + 2 - s)
                     : load(filter, ((int64_t{o} * d.inputs + c) * 3 + r) * 3 + s);
    }
    weights[i] = v;
  }
  __syncthreads();
  const int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (t >= d.threads) return;
  const int strip = static_cast<int>(t % d.strips);
  const int64_t line = t / d.strips;  // image * h + row
  const int row = static_cast<int>(line % d.h);
  const int64_t image = line / d.h;
  const int col = strip * kPixels;
  const int64_t plane = int64_t{d.h} * d.w;

  float sum[kPixels][kChannels] = {};
  const T* src = in + image * d.inputs * plane;
  for (int c = 0; c < d.inputs; ++c, src += plane) {
    float v[3][kPixels + 2];
#pragma unroll
    for (int r = 0; r < 3; ++r) {
      const int y = row + r - 1;
#pragma unroll
      for (int j = 0; j < kPixels + 2; ++j) {
        const int x = col + j - 1;
        v[r][j] = y >= 0 && y < d.h && x >= 0 && x < d.w ? load(src, int64_t{y} * d.w + x) : 0.0f;
      }
    }
    const float4* wc = reinterpret_cast<const float4*>(weights + c * kTaps * kChannels);
#pragma unroll
    for (int tap = 0; tap < kTaps; ++tap) {
      const float4 a = wc[2 * tap], b = wc[2 * tap + 1];
      const float w8[kChannels] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
#pragma unroll
      for (int p = 0; p < kPixels; ++p)
#pragma unroll
        for (int o = 0; o < kChannels; ++o)
          sum[p][o] = fmaf(v[tap / 3][p + tap % 3], w8[o], sum[p][o]);
    }
  }

  T* dst = out + (image * d.outputs + first_output) * plane + int64_t{row} * d.w + col;
#pragma unroll
  for (int o = 0; o < kChannels; ++o) {
    if (first_output + o >= d.outputs) break;
#pragma unroll
    for (int p = 0; p < kPixels; ++p) {
      if (col + p >= d.w) break;
      const int64_t at = o * plane + p;
      store(dst, at, accumulate ? load(dst, at) + sum[p][o] : sum[p][o]);
    }
  }
}

template <class T>
void launch(const Tensor& in, const void* filter, int outputs, bool transposed, bool accumulate,
            const Tensor& out) {
  DirectDims d{};
  d.images = in.shape[0];
  d.inputs = static_cast<int>(in.shape[1]);
  d.outputs = outputs;
  d.h = static_cast<int>(in.shape[2]);
  d.w = static_cast<int>(in.shape[3]);
  d.strips = (d.w + kPixels - 1) / kPixels;
  d.threads = d.images * d.h * d.strips;
  if (d.threads == 0) return;
  const dim3 grid(static_cast<unsigned>((d.threads + kThreads - 1) / kThreads),
                  static_cast<unsigned>((outputs + kChannels - 1) / kChannels));
  const size_t shared = sizeof(float) * d.inputs * kTaps * kChannels;
  PSGD_LAUNCH(conv3x3_kernel<T>, grid, kThreads, shared)
  (in.as<T>(), static_cast<const T*>(filter), out.as<T>(), d, transposed, accumulate);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

bool conv2d_direct_supported(const Shape& w, ops::Conv2dGeometry g) {
  return w[2] == 3 && w[3] == 3 && g.stride == 1 && g.pad == 1 && w[0] <= kMaxInputs &&
         w[1] <= kMaxInputs;
}

void conv2d_direct_forward(const Tensor& x, const void* w, const Shape& w_shape, const Tensor& y) {
  with_activation_type(x.dtype, [&](auto t) {
    launch<decltype(t)>(x, w, static_cast<int>(w_shape[0]), false, false, y);
  });
}

void conv2d_direct_backward_data(const Tensor& dy, const void* w, const Shape& w_shape,
                                 GradMode dx_mode, const Tensor& dx) {
  with_activation_type(dy.dtype, [&](auto t) {
    launch<decltype(t)>(dy, w, static_cast<int>(w_shape[1]), true, dx_mode == GradMode::Accumulate,
                        dx);
  });
}

}  // namespace psgd::cuda
