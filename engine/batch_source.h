// Where training and evaluation batches come from: the engine's side of the data loader.
#pragma once

#include <cstdint>

#include "engine/tensor.h"

namespace psgd {

class BatchSource {
 public:
  virtual ~BatchSource() = default;
  virtual void start_epoch(int64_t epoch) = 0;
  // The next batch: images (n, C, H, W) float32 and labels (n) int32, valid until the next call;
  // false at the end of the epoch.
  virtual bool next(Tensor& images, Tensor& labels) = 0;
  virtual int64_t batches_per_epoch() const = 0;
  virtual int64_t samples() const = 0;
};

}  // namespace psgd
