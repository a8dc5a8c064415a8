// A small in-memory dataset in the CIFAR layout for loader and evaluation tests: pseudo-random
// pixels from a multiplicative hash, labels cycling through the classes.
#pragma once

#include "data/dataset.h"

namespace psgd::test {

inline data::Dataset pattern_dataset(int64_t images, int classes) {
  data::Dataset d;
  d.classes = classes;
  d.norm = data::reference_normalization();
  d.images.resize(static_cast<size_t>(images * data::kImageBytes));
  for (size_t i = 0; i < d.images.size(); ++i)
    d.images[i] = static_cast<uint8_t>((i * 2654435761u) >> 13);
  for (int64_t i = 0; i < images; ++i) d.labels.push_back(static_cast<int32_t>(i % classes));
  return d;
}

}  // namespace psgd::test
