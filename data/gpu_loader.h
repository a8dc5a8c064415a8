// The loader on the GPU: the uint8 dataset resident in device memory, each batch gathered,
// augmented and normalised by one kernel that draws from the same counter-based RNG as the CPU
// loader (data/augment.h), so the batches are the CPU loader's, byte for byte. The host computes
// an epoch's sample order and uploads it once per epoch; a batch is then one kernel launch.
#pragma once

#include <cstdint>
#include <vector>

#include "data/loader.h"
#include "engine/memory.h"

namespace psgd::data {

class GpuLoader final : public BatchSource {
 public:
  // Copies the dataset (or the part `subset` names, kept whole for simplicity) to the GPU.
  GpuLoader(const Dataset& data, LoaderConfig config, std::vector<int64_t> subset = {});

  void start_epoch(int64_t epoch) override;
  int64_t batches_per_epoch() const override { return data::batches_per_epoch(samples(), config_); }
  int64_t samples() const override { return static_cast<int64_t>(subset_.size()); }
  // The batch stays valid until the next call; its memory does not move between calls.
  bool next(Tensor& images, Tensor& labels) override;

 private:
  LoaderConfig config_;
  Normalization norm_;
  std::vector<int64_t> subset_;
  DeviceBuffer dataset_images_;       // (N, 3, 32, 32) uint8
  DeviceBuffer dataset_labels_;       // (N) int32
  DeviceBuffer epoch_samples_;        // this rank's samples of the epoch, batch after batch (int32)
  std::vector<int64_t> batch_start_;  // into epoch_samples_, one per batch and one past the end
  DeviceBuffer images_, labels_;      // the current batch
  int64_t epoch_ = 0, next_batch_ = 0;
};

}  // namespace psgd::data
