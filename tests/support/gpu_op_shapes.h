// The awkward shapes on which the GPU op suites (float32 and bf16) compare each CUDA op with its
// CPU twin: partial blocks and tiles, overlapping pooling windows, strided and 1x1 convolutions,
// and one size of a real network layer each.
#pragma once

#include <array>
#include <cstdint>

#include "kernels/ops.h"

namespace psgd::test {

// Element counts for the elementwise ops: one, a partial warp, a partial block, a large prime.
inline constexpr int64_t kElementCounts[] = {1, 7, 1000, 1000003};

// Batch norm inputs. A channel of up to 16,384 values forward, 8,192 backward, is done by one
// block (kernels/cuda/batch_norm_one_block.cuh): a few images and odd sizes, a ResNet stage-1
// layer at batch 16 (16 values a thread forward, the most; split backward), 7 images of many
// channels, many images of 24 channels (a thread's last values partial), many channels of 240
// values, a 2-D input, planes of 4, 11,700 values (1,024 threads forward, the last values partial;
// split backward) and 8,192 (8 a thread, the most backward). Larger ones take the split
// reductions: 40 images of 2 channels, a block per image (more of a channel's blocks than a
// warp's lanes: the folding warp's first 8 lanes add two each; planes of 1,024, 4 elements at a
// time); 40 images over 32 blocks per channel, unevenly (planes of 841, one at a time); and 64
// images over 32 blocks, 2 each, 4 elements at a time (as ResNet's stage 1 at batch 128).
inline std::array<Shape, 12> batch_norm_shapes() {
  return {Shape{3, 5, 3, 7},    Shape{16, 16, 32, 32}, Shape{7, 100, 3, 3},
          Shape{64, 24, 5, 5},  Shape{40, 520, 2, 3},  Shape{6, 4},
          Shape{5, 3, 2, 2},    Shape{13, 2, 30, 30},  Shape{8, 4, 32, 32},
          Shape{40, 2, 32, 32}, Shape{40, 16, 29, 29}, Shape{64, 16, 24, 24}};
}

// Loss inputs (rows, classes): fewer classes than a warp's lanes, and more; rows for one block,
// several (a warp each), and more than the most blocks' warps (some warps take two rows, the fold
// adds 1,024 blocks).
struct LossShape {
  int64_t rows, classes;
};

inline std::array<LossShape, 6> loss_shapes() {
  return {LossShape{1, 100}, {3, 10}, {3, 100}, {512, 10}, {512, 100}, {9000, 10}};
}

struct PoolShape {
  Shape x;
  ops::Pool2dGeometry g;
};

inline std::array<PoolShape, 4> pool_shapes() {
  return {PoolShape{{2, 3, 8, 8}, {8, 8}}, PoolShape{{3, 2, 7, 7}, {3, 2}},
          PoolShape{{3, 1, 7, 5}, {2, 2}}, PoolShape{{64, 16, 32, 32}, {2, 2}}};
}

struct ConvShape {
  Shape x, w;
  ops::Conv2dGeometry g;
};

// Convolutions through cuDNN: the stem, stride 2 on odd and on even sizes (the latter served by
// psgd's tensor-core kernels in all three directions too), a strided 1x1, and ResNet's first stage.
inline std::array<ConvShape, 5> conv_shapes() {
  return {ConvShape{{2, 3, 32, 32}, {16, 3, 3, 3}, {1, 1}},
          ConvShape{{5, 16, 9, 7}, {32, 16, 3, 3}, {2, 1}},
          ConvShape{{3, 8, 8, 16}, {16, 8, 3, 3}, {2, 1}},
          ConvShape{{3, 32, 8, 8}, {64, 32, 1, 1}, {2, 0}},
          ConvShape{{128, 16, 32, 32}, {16, 16, 3, 3}, {1, 1}}};
}

// Shapes for psgd's direct 3x3 convolution: the stem's 3 channels, rows that end in a partial
// strip and output channels that end in a partial group, 64 channels in and out (its limit), a
// plane smaller than the filter, and ResNet's first stage.
inline std::array<ConvShape, 5> direct_conv_shapes() {
  return {ConvShape{{2, 3, 32, 32}, {16, 3, 3, 3}, {1, 1}},
          ConvShape{{3, 16, 9, 7}, {20, 16, 3, 3}, {1, 1}},
          ConvShape{{2, 64, 8, 8}, {64, 64, 3, 3}, {1, 1}},
          ConvShape{{4, 5, 1, 2}, {3, 5, 3, 3}, {1, 1}},
          ConvShape{{128, 16, 32, 32}, {16, 16, 3, 3}, {1, 1}}};
}

// Shapes for psgd's tensor-core 3x3 convolution: the stem's 3 channels, a width that leaves
// blocks starting mid-row with outputs ending in a partial tile of 8, two output groups and
// blocks of two whole images, a plane smaller than the filter with 5 channels in, rows of 32 with
// outputs 16 past a group, one row of 130 (a tile within a row), columns of width 1.
inline std::array<ConvShape, 7> tensor_core_conv_shapes() {
  return {ConvShape{{2, 3, 32, 32}, {16, 3, 3, 3}, {1, 1}},
          ConvShape{{3, 16, 9, 7}, {20, 16, 3, 3}, {1, 1}},
          ConvShape{{3, 64, 8, 8}, {64, 64, 3, 3}, {1, 1}},
          ConvShape{{5, 5, 1, 2}, {8, 5, 3, 3}, {1, 1}},
          ConvShape{{4, 16, 32, 32}, {48, 16, 3, 3}, {1, 1}},
          ConvShape{{2, 8, 1, 130}, {8, 8, 3, 3}, {1, 1}},
          ConvShape{{3, 8, 5, 1}, {16, 8, 3, 3}, {1, 1}}};
}

// Shapes for it at stride 2: ResNet's first stride-2 layer, 5 channels in to outputs ending in a
// partial tile with output rows of 5 (135 pixels: the second block starts mid-row), planes of 2x2
// outputs (several images to a block), 40 channels in (two output groups of the data gradient,
// the second partial), and planes of one output pixel (the dy rows and columns below and right of
// it read as zeros).
inline std::array<ConvShape, 5> tensor_core_stride2_shapes() {
  return {ConvShape{{2, 16, 32, 32}, {32, 16, 3, 3}, {2, 1}},
          ConvShape{{9, 5, 6, 10}, {12, 5, 3, 3}, {2, 1}},
          ConvShape{{40, 8, 4, 4}, {8, 8, 3, 3}, {2, 1}},
          ConvShape{{2, 40, 8, 8}, {16, 40, 3, 3}, {2, 1}},
          ConvShape{{3, 8, 2, 2}, {8, 8, 3, 3}, {2, 1}}};
}

// Shapes for its filter gradient (output widths multiples of 8): the stem's 3 channels in, blocks
// of two whole images, slabs of several tiles with outputs 16 past a group, three-row images with
// 12 channels in (a partial step) and a partial output tile, rows of 136 (a tile within a row),
// two slabs of which the last is shorter, 64 slabs (each summing thread of the second pass takes
// two); stride 2 into rows of 16 and of 8.
inline std::array<ConvShape, 9> tensor_core_filter_shapes() {
  return {ConvShape{{2, 3, 16, 16}, {16, 3, 3, 3}, {1, 1}},
          ConvShape{{3, 64, 8, 8}, {64, 64, 3, 3}, {1, 1}},
          ConvShape{{4, 16, 32, 32}, {48, 16, 3, 3}, {1, 1}},
          ConvShape{{2, 12, 3, 16}, {20, 12, 3, 3}, {1, 1}},
          ConvShape{{1, 8, 2, 136}, {8, 8, 3, 3}, {1, 1}},
          ConvShape{{5, 32, 8, 16}, {32, 32, 3, 3}, {1, 1}},
          ConvShape{{8, 8, 32, 32}, {8, 8, 3, 3}, {1, 1}},
          ConvShape{{2, 16, 32, 32}, {32, 16, 3, 3}, {2, 1}},
          ConvShape{{3, 8, 6, 16}, {24, 8, 3, 3}, {2, 1}}};
}

}  // namespace psgd::test
