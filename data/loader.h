// The loader: an epoch permutation from the seed, this rank's shard of each global batch,
// augmentation and normalisation, all prepared on a background thread ahead of the step.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "data/dataset.h"
#include "engine/batch_source.h"

namespace psgd::data {

struct LoaderConfig {
  int64_t batch_size = 128;  // the global batch, split evenly over `world` ranks
  bool shuffle = true;
  bool augment = true;
  bool drop_last = false;    // the reference keeps the last partial batch
  uint64_t seed = 0;
  int rank = 0, world = 1;
  int prefetch = 3;          // batches prepared ahead
};

// The sample order of one epoch: a permutation of [0, n) from (seed, epoch), or 0..n-1.
std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch, bool shuffle);

// `count` samples held out of [0, n) by a fixed permutation of `seed`: {train, validation}.
struct HeldOut {
  std::vector<int64_t> train, validation;
};
HeldOut hold_out(int64_t n, int64_t count, uint64_t seed);

// The samples a run trains and evaluates on, named by psgd-train's flags: with `holdout`, that
// many training images held out for evaluation and `train_subset` (0: all) picked at random from
// the rest; without, `train_subset` and `test_subset` picked at random from the training and
// test sets (a hold-out takes no test subset). Empty: every sample of its set. Asking for more
// images than a set holds is an error.
struct SampleChoice {
  int64_t holdout = 0, train_subset = 0, test_subset = 0;
};
struct RunSamples {
  std::vector<int64_t> train, evaluation;
};
RunSamples choose_samples(int64_t train_size, int64_t test_size, const SampleChoice& choice,
                          uint64_t seed);

// The dataset indices of rank config.rank's part of global batch `b` of an epoch order over
// `subset`.
std::vector<int64_t> shard_of(const std::vector<int64_t>& order, int64_t b,
                              const LoaderConfig& config, const std::vector<int64_t>& subset);

// The batches a loader over `samples` gives per epoch.
int64_t batches_per_epoch(int64_t samples, const LoaderConfig& config);

// Checks a loader's configuration and subset, and fills an empty subset with every sample.
void prepare_subset(const Dataset& data, const LoaderConfig& config, std::vector<int64_t>& subset);

class Loader final : public BatchSource {
 public:
  // `subset` restricts the loader to these sample indices (empty: the whole dataset).
  Loader(const Dataset& data, LoaderConfig config, std::vector<int64_t> subset = {});
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  // Starts preparing `epoch` (numbered as the training loop numbers it).
  void start_epoch(int64_t epoch) override;
  int64_t batches_per_epoch() const override;
  int64_t samples() const override { return static_cast<int64_t>(subset_.size()); }
  // This rank's next batch: images (n, 3, 32, 32) float and labels (n) int32, valid until the
  // next call; false at the end of the epoch.
  bool next(Tensor& images, Tensor& labels) override;
  // The dataset indices of this rank's part of global batch `b` of an epoch order.
  std::vector<int64_t> shard(const std::vector<int64_t>& order, int64_t b) const;

 private:
  struct Slot {
    std::vector<float> images;
    std::vector<int32_t> labels;
    int64_t count = 0;
  };
  void produce(int64_t epoch, std::vector<int64_t> order);
  void stop();

  const Dataset& data_;
  LoaderConfig config_;
  std::vector<int64_t> subset_;
  std::vector<Slot> slots_;
  std::thread worker_;
  std::mutex mutex_;
  std::condition_variable changed_;
  int64_t produced_ = 0, consumed_ = 0, total_ = 0;
  bool stopping_ = false;
  std::exception_ptr error_;
};

// The loader for a device: this Loader on the CPU, the GpuLoader (data/gpu_loader.h) on CUDA.
std::unique_ptr<BatchSource> make_loader(const Dataset& data, LoaderConfig config,
                                         std::vector<int64_t> subset, Device device);

}  // namespace psgd::data
