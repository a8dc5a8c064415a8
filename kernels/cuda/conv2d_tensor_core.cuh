// What psgd's tensor-core 3x3 convolutions share (conv2d_tensor_core.cu: forward and data
// gradient; conv2d_tensor_core_filter.cu: filter gradient): a block works through 128
// consecutive pixels (of the flattened images x rows x columns) at a time, with the input rows
// they and their 3x3 neighbourhoods touch staged in shared memory, rounded to TF32.
#pragma once

#include <cstdint>

#include "engine/bfloat16.h"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/mma.h"
#include "kernels/fast_divide.h"
#include "kernels/ops.h"

namespace psgd::cuda::tensor_core {

constexpr int kTilePixels = 128;  // consecutive pixels a block stages at a time
constexpr int kStep = 8;          // input channels staged at a time: an mma's K or N
constexpr int kTaps = 9;
constexpr size_t kMaxSharedBytes = 48 * 1024;

// The smallest stride of at least `floats` floats that is `residue` modulo 32: chosen so that the
// 32 lanes of a fragment load fall in distinct shared-memory banks.
constexpr int padded_stride(int floats, int residue) {
  return (floats + 31 - residue) / 32 * 32 + residue;
}

// An input (images, channels, h, w) as its rows: line l is image l / h, row l % h.
struct InputRows {
  int64_t lines;
  int channels, h, w;
  FastDivisor by_h;
};

inline InputRows input_rows(const Shape& x) {
  const int h = static_cast<int>(x[2]);
  return {x[0] * h, static_cast<int>(x[1]), h, static_cast<int>(x[3]),
          FastDivisor(static_cast<uint32_t>(h))};
}

// The convolution's geometry: its output rows and stride (padding 1). Output row l (of the
// flattened images x rows) reads input rows stride * l - 1 .. stride * l + 1, as the input's
// height is stride times the output's. Pixels count below 2^31, so that they divide in 32 bits.
struct OutputRows {
  int h, w, stride;
  int64_t pixels;                    // images * h * w
  FastDivisor by_w, by_h, by_plane;  // a pixel by w: its row; a row by h, a pixel by h w: its image
};

inline OutputRows output_rows(const Shape& x, int stride) {
  const int h = static_cast<int>((x[2] - 1) / stride + 1),
            w = static_cast<int>((x[3] - 1) / stride + 1);
  return {h,
          w,
          stride,
          x[0] * h * w,
          FastDivisor(static_cast<uint32_t>(w)),
          FastDivisor(static_cast<uint32_t>(h)),
          FastDivisor(static_cast<uint32_t>(h * w))};
}

// Whether the kernels serve a 3x3 convolution of padding 1 on input x: stride 1, or stride 2 on
// even heights and widths (so that output row l reads input rows from 2l - 1 in every image), with
// the pixels of the input and output below 2^31.
inline bool geometry_served(const Shape& x, const Shape& w, ops::Conv2dGeometry g) {
  return w[2] == 3 && w[3] == 3 && g.pad == 1 && x[0] > 0 && x[2] > 0 && x[3] > 0 &&
         x[0] * x[2] * x[3] < (int64_t{1} << 31) &&
         (g.stride == 1 || (g.stride == 2 && x[2] % 2 == 0 && x[3] % 2 == 0));
}

// How a block stages the input rows of a tile of kTilePixels output pixels: `count` rows per
// channel (those of the output rows it spans, and one above and below), each of w + 2 columns
// (the padding either side), channels `channel_stride` floats apart; and the divisor of the
// staging loop's index arithmetic.
struct Staging {
  int count, channel_stride;
  FastDivisor by_row;  // a staged element's index in its channel by w + 2
};

// `residue`: the channel stride modulo 32 that keeps the kernel's fragment loads apart.
inline Staging staging_for(const Shape& x, const OutputRows& o, int residue) {
  const int count = o.stride * ((kTilePixels - 1) / o.w + 1) + 3, row = static_cast<int>(x[3]) + 2;
  return {count, padded_stride(count * row, residue), FastDivisor(static_cast<uint32_t>(row))};
}

// Stages channels c0 .. c0 + kStep - 1 of rows first_line .. first_line + s.count - 1 into
// staged[c * s.channel_stride + (l - first_line) * (w + 2) + 1 + column], each row between zero
// columns (the padding), rows outside the batch and channels past the last zero, values rounded
// to TF32. A thread takes a place in the rows and stages it for all the step's channels, so that
// the place's arithmetic is done once per 8 values. All threads of the block take part; the
// caller places the barriers.
template <class T>
__device__ void stage_rows(const T* __restrict__ in, const InputRows& d, const Staging& s, int c0,
                           int64_t first_line, float* staged) {
  const uint32_t row_length = s.by_row.divisor(), places = s.count * row_length;
  const int64_t plane = int64_t{d.h} * d.w;
  const int channels = min(kStep, d.channels - c0);
  for (uint32_t i = threadIdx.x; i < places; i += blockDim.x) {
    const uint32_t staged_line = s.by_row.divide(i);
    const int col = static_cast<int>(i - staged_line * row_length) - 1;
    const int64_t line = first_line + staged_line;
    const bool inside = line >= 0 && line < d.lines && col >= 0 && col < d.w;
    int64_t at = 0;  // the place's element of channel c0
    if (inside) {
      const int64_t image = d.by_h.divide(static_cast<uint32_t>(line));
      at = ((image * d.channels + c0) * d.h + (line - image * d.h)) * d.w + col;
    }
#pragma unroll
    for (int c = 0; c < kStep; ++c) {
      const float v = inside && c < channels ? load(in, at + c * plane) : 0.0f;
      staged[c * s.channel_stride + i] = round_to_tf32(v);
    }
  }
}

}  // namespace psgd::cuda::tensor_core
