// The reference's training transform, pixel by pixel: reflect-pad 4, horizontal flip (p = 0.5),
// random 32x32 crop, scale to [0, 1], normalise. Every random choice comes from the counter-based
// RNG keyed by (seed, epoch, sample), so a CUDA kernel reproduces the same bytes.
#pragma once

#include <cstdint>

#include "data/dataset.h"
#include "kernels/rng.h"

namespace psgd::data {

inline constexpr int kPad = 4;
inline constexpr int kCropPositions = 2 * kPad + 1;  // offsets 0..8 into the 40x40 padded image

struct SampleDraws {
  bool flip = false;
  int dy = kPad, dx = kPad;  // crop offset in the padded image; (4, 4) is the identity
};

// The draws of one sample in one epoch.
PSGD_HOST_DEVICE inline SampleDraws draw_sample(uint64_t seed, uint64_t epoch, uint64_t sample) {
  const uint64_t key = rng::stream_key(seed, (epoch << 32) | (sample & 0xffffffffu));
  SampleDraws d;
  d.flip = rng::uniform(key, 0) < 0.5f;
  d.dy = static_cast<int>(rng::bits64(key, 1) % kCropPositions);
  d.dx = static_cast<int>(rng::bits64(key, 2) % kCropPositions);
  return d;
}

// PyTorch's 'reflect' padding: index -1 reads 1, index n reads n - 2.
PSGD_HOST_DEVICE inline int reflect(int i, int n) {
  return i < 0 ? -i : (i >= n ? 2 * n - 2 - i : i);
}

// The source row and column of output pixel (y, x): pad, flip the padded image, crop.
PSGD_HOST_DEVICE inline int source_row(int y, const SampleDraws& d) {
  return reflect(y + d.dy - kPad, kSide);
}
PSGD_HOST_DEVICE inline int source_col(int x, const SampleDraws& d) {
  const int padded = x + d.dx;
  return reflect((d.flip ? kSide + 2 * kPad - 1 - padded : padded) - kPad, kSide);
}

// (v / 255 - mean) / std, in float32 as torchvision's ToTensor and Normalize.
PSGD_HOST_DEVICE inline float normalise(uint8_t v, float mean, float std) {
  return (static_cast<float>(v) / 255.0f - mean) / std;
}

// One image (3, 32, 32) uint8 -> float; `draws` null means the test transform (no augmentation).
void transform_image(const uint8_t* src, float* dst, const SampleDraws* draws,
                     const Normalization& norm);

}  // namespace psgd::data
