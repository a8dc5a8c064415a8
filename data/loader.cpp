#include "data/loader.h"

#include <algorithm>
#include <numeric>
#include <utility>

#include "data/augment.h"
#ifdef PSGD_WITH_CUDA
#include "data/gpu_loader.h"
#endif
#include "engine/check.h"
#include "kernels/rng.h"

namespace psgd::data {
namespace {

// Streams of the order, hold-out and subset permutations, apart from the augmentation streams.
constexpr uint64_t kOrderStream = 0x0dd5ull << 48;
constexpr uint64_t kHoldOutStream = 0x401dull << 48;
constexpr uint64_t kSubsetStream = 0x5b5eull << 48;

void permute(std::vector<int64_t>& v, uint64_t key) {
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[rng::bits64(key, i) % i]);
}

// [0, n) split by a permutation of `key` into its first `count` and the rest, each sorted.
HeldOut split_drawn(int64_t n, int64_t count, uint64_t key) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  permute(order, key);
  HeldOut h{{order.begin() + count, order.end()}, {order.begin(), order.begin() + count}};
  std::sort(h.train.begin(), h.train.end());
  std::sort(h.validation.begin(), h.validation.end());
  return h;
}

// `keep` of `size` samples drawn by `key`; empty (every sample) for 0 or all.
std::vector<int64_t> pick(int64_t size, int64_t keep, uint64_t key, const char* flag,
                          const char* from) {
  PSGD_CHECK(keep <= size, flag, " ", keep, ": ", from, " holds only ", size, " images");
  if (keep == 0 || keep == size) return {};
  return split_drawn(size, size - keep, key).train;
}

}  // namespace

std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch, bool shuffle) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  if (shuffle) permute(order, rng::stream_key(seed, kOrderStream + static_cast<uint64_t>(epoch)));
  return order;
}

HeldOut hold_out(int64_t n, int64_t count, uint64_t seed) {
  PSGD_CHECK(count >= 0 && count < n, "cannot hold out ", count, " of ", n, " samples");
  return split_drawn(n, count, rng::stream_key(seed, kHoldOutStream));
}

RunSamples choose_samples(int64_t train_size, int64_t test_size, const SampleChoice& choice,
                          uint64_t seed) {
  // Without a hold-out the subsets are drawn as hold-outs of the images left out (the picks of
  // earlier runs); with one, by a stream of their own, which the hold-out's draws do not bias.
  const uint64_t drawn_as_held_out = rng::stream_key(seed, kHoldOutStream);
  if (choice.holdout == 0) {
    return {
        pick(train_size, choice.train_subset, drawn_as_held_out, "--train-subset",
             "the training set"),
        pick(test_size, choice.test_subset, drawn_as_held_out, "--test-subset", "the test set")};
  }
  PSGD_CHECK(choice.test_subset == 0, "a test subset means nothing with a hold-out");
  HeldOut split = hold_out(train_size, choice.holdout, seed);
  const std::vector<int64_t> picked = pick(
      static_cast<int64_t>(split.train.size()), choice.train_subset,
      rng::stream_key(seed, kSubsetStream), "--train-subset", "the training set less --holdout");
  RunSamples samples{std::move(split.train), std::move(split.validation)};
  if (!picked.empty()) {
    std::vector<int64_t> rest = std::move(samples.train);
    samples.train.clear();
    for (int64_t i : picked) samples.train.push_back(rest[static_cast<size_t>(i)]);
  }
  return samples;
}

void prepare_subset(const Dataset& data, const LoaderConfig& config, std::vector<int64_t>& subset) {
  PSGD_CHECK(config.world >= 1 && config.rank >= 0 && config.rank < config.world,
             "rank ", config.rank, " of ", config.world, " is invalid");
  PSGD_CHECK(config.batch_size >= 1, "batch size must be positive, got ", config.batch_size);
  PSGD_CHECK(config.batch_size % config.world == 0, "the global batch of ", config.batch_size,
             " does not split evenly over ", config.world, " ranks");
  if (subset.empty()) {
    subset.resize(static_cast<size_t>(data.size()));
    std::iota(subset.begin(), subset.end(), 0);
  }
  for (int64_t i : subset)
    PSGD_CHECK(i >= 0 && i < data.size(), "sample ", i, " outside the dataset");
  PSGD_CHECK(!subset.empty(), "the loader has no samples");
}

int64_t batches_per_epoch(int64_t samples, const LoaderConfig& config) {
  const int64_t b = config.batch_size;
  return config.drop_last ? samples / b : (samples + b - 1) / b;
}

Loader::Loader(const Dataset& data, LoaderConfig config, std::vector<int64_t> subset)
    : data_(data), config_(config), subset_(std::move(subset)) {
  prepare_subset(data, config, subset_);
  PSGD_CHECK(config.prefetch >= 1, "prefetch must be at least 1");
  const int64_t per_rank = config.batch_size / config.world;
  slots_.resize(static_cast<size_t>(config.prefetch));
  for (Slot& s : slots_) {
    s.images.resize(static_cast<size_t>(per_rank * kImageBytes));
    s.labels.resize(static_cast<size_t>(per_rank));
  }
}

Loader::~Loader() { stop(); }

int64_t Loader::batches_per_epoch() const { return data::batches_per_epoch(samples(), config_); }

std::vector<int64_t> shard_of(const std::vector<int64_t>& order, int64_t b,
                              const LoaderConfig& config, const std::vector<int64_t>& subset) {
  const int64_t begin = b * config.batch_size;
  const int64_t size = std::min(config.batch_size, static_cast<int64_t>(order.size()) - begin);
  // Even split; a last partial batch is spread as evenly as it goes.
  const int64_t lo = begin + size * config.rank / config.world;
  const int64_t hi = begin + size * (config.rank + 1) / config.world;
  std::vector<int64_t> out;
  for (int64_t i = lo; i < hi; ++i) out.push_back(subset[static_cast<size_t>(order[i])]);
  return out;
}

std::vector<int64_t> Loader::shard(const std::vector<int64_t>& order, int64_t b) const {
  return shard_of(order, b, config_, subset_);
}

void Loader::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  if (worker_.joinable()) worker_.join();
}

void Loader::start_epoch(int64_t epoch) {
  stop();
  produced_ = consumed_ = 0;
  total_ = batches_per_epoch();
  stopping_ = false;
  error_ = nullptr;
  worker_ = std::thread(&Loader::produce, this, epoch,
                        epoch_order(samples(), config_.seed, epoch, config_.shuffle));
}

void Loader::produce(int64_t epoch, std::vector<int64_t> order) {
  try {
    for (int64_t b = 0; b < total_; ++b) {
      {
        // A slot is free once the batch before it in the ring has been handed out and released
        // (the consumer holds one batch at a time).
        std::unique_lock lock(mutex_);
        changed_.wait(lock, [&] {
          return stopping_ || b - std::max<int64_t>(consumed_ - 1, 0) < static_cast<int64_t>(slots_.size());
        });
        if (stopping_) return;
      }
      Slot& slot = slots_[static_cast<size_t>(b % static_cast<int64_t>(slots_.size()))];
      const std::vector<int64_t> samples = shard(order, b);
      slot.count = static_cast<int64_t>(samples.size());
      for (size_t k = 0; k < samples.size(); ++k) {
        const int64_t i = samples[k];
        const SampleDraws draws = draw_sample(config_.seed, static_cast<uint64_t>(epoch), i);
        transform_image(data_.image(i), slot.images.data() + k * kImageBytes,
                        config_.augment ? &draws : nullptr, data_.norm);
        slot.labels[k] = data_.labels[static_cast<size_t>(i)];
      }
      {
        std::lock_guard lock(mutex_);
        ++produced_;
      }
      changed_.notify_all();
    }
  } catch (...) {
    std::lock_guard lock(mutex_);
    error_ = std::current_exception();
    changed_.notify_all();
  }
}

bool Loader::next(Tensor& images, Tensor& labels) {
  PSGD_CHECK(worker_.joinable() || total_ > 0, "next() before start_epoch()");
  std::unique_lock lock(mutex_);
  if (consumed_ == total_) return false;
  changed_.wait(lock, [&] { return produced_ > consumed_ || error_; });
  if (error_) std::rethrow_exception(error_);
  Slot& slot = slots_[static_cast<size_t>(consumed_ % static_cast<int64_t>(slots_.size()))];
  ++consumed_;
  lock.unlock();
  changed_.notify_all();  // the previous batch is released
  images = Tensor(slot.images.data(), Shape{slot.count, kChannels, kSide, kSide}, Device::CPU);
  labels = Tensor(slot.labels.data(), Shape{slot.count}, Device::CPU);
  return true;
}

std::unique_ptr<BatchSource> make_loader(const Dataset& data, LoaderConfig config,
                                         std::vector<int64_t> subset, Device device) {
#ifdef PSGD_WITH_CUDA
  if (device == Device::CUDA) return std::make_unique<GpuLoader>(data, config, std::move(subset));
#endif
  PSGD_CHECK(device == Device::CPU, "no loader for ", device_name(device), " in this build");
  return std::make_unique<Loader>(data, config, std::move(subset));
}

}  // namespace psgd::data
