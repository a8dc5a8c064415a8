#include "data/augment.h"

namespace psgd::data {

void transform_image(const uint8_t* src, float* dst, const SampleDraws* draws,
                     const Normalization& norm) {
  for (int c = 0; c < kChannels; ++c) {
    const uint8_t* plane = src + c * kSide * kSide;
    float* out = dst + c * kSide * kSide;
    const float mean = norm.mean[c], std = norm.std[c];
    if (!draws) {
      for (int i = 0; i < kSide * kSide; ++i) out[i] = normalise(plane[i], mean, std);
      continue;
    }
    int cols[kSide];
    for (int x = 0; x < kSide; ++x) cols[x] = source_col(x, *draws);
    for (int y = 0; y < kSide; ++y) {
      const uint8_t* row = plane + source_row(y, *draws) * kSide;
      for (int x = 0; x < kSide; ++x) out[y * kSide + x] = normalise(row[cols[x]], mean, std);
    }
  }
}

}  // namespace psgd::data
