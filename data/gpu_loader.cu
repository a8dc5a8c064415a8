#include "data/augment.h"
#include "data/gpu_loader.h"
#include "kernels/cuda/launch.h"

namespace psgd::data {
namespace {

struct Channels {
  float mean[kChannels], std[kChannels];
};

}  // namespace

GpuLoader::GpuLoader(const Dataset& data, LoaderConfig config, std::vector<int64_t> subset)
    : config_(config), norm_(data.norm), subset_(std::move(subset)) {
  prepare_subset(data, config_, subset_);
  dataset_images_ = DeviceBuffer(Device::CUDA, data.images.size());
  memory_copy(dataset_images_.data(), Device::CUDA, data.images.data(), Device::CPU,
              data.images.size());
  dataset_labels_ = DeviceBuffer(Device::CUDA, data.labels.size() * sizeof(int32_t));
  memory_copy(dataset_labels_.data(), Device::CUDA, data.labels.data(), Device::CPU,
              data.labels.size() * sizeof(int32_t));
  const int64_t per_rank = config_.batch_size / config_.world;
  images_ = DeviceBuffer(Device::CUDA, static_cast<size_t>(per_rank * kImageBytes) * sizeof(float));
  labels_ = DeviceBuffer(Device::CUDA, static_cast<size_t>(per_rank) * sizeof(int32_t));
  epoch_samples_ = DeviceBuffer(Device::CUDA, subset_.size() * sizeof(int32_t));
}

void GpuLoader::start_epoch(int64_t epoch) {
  const std::vector<int64_t> order = epoch_order(samples(), config_.seed, epoch, config_.shuffle);
  std::vector<int32_t> mine;
  batch_start_.assign(1, 0);
  for (int64_t b = 0; b < batches_per_epoch(); ++b) {
    for (int64_t i : shard_of(order, b, config_, subset_)) mine.push_back(static_cast<int32_t>(i));
    batch_start_.push_back(static_cast<int64_t>(mine.size()));
  }
  memory_copy(epoch_samples_.data(), Device::CUDA, mine.data(), Device::CPU,
              mine.size() * sizeof(int32_t));
  epoch_ = epoch;
  next_batch_ = 0;
}

bool GpuLoader::next(Tensor& images, Tensor& labels) {
  if (next_batch_ + 1 >= static_cast<int64_t>(batch_start_.size())) return false;
  const int64_t first = batch_start_[next_batch_], count = batch_start_[next_batch_ + 1] - first;
  ++next_batch_;
  const uint8_t* source = reinterpret_cast<const uint8_t*>(dataset_images_.data());
  const int32_t* source_labels = reinterpret_cast<const int32_t*>(dataset_labels_.data());
  const int32_t* samples = reinterpret_cast<const int32_t*>(epoch_samples_.data()) + first;
  float* out = reinterpret_cast<float*>(images_.data());
  int32_t* out_labels = reinterpret_cast<int32_t*>(labels_.data());
  Channels norm;
  for (int c = 0; c < kChannels; ++c) norm.mean[c] = norm_.mean[c], norm.std[c] = norm_.std[c];
  const uint64_t seed = config_.seed, epoch = static_cast<uint64_t>(epoch_);
  const bool augment = config_.augment;
  cuda::for_each(count * kImageBytes, [=] __device__(int64_t i) {
    const int64_t k = i / kImageBytes, within = i % kImageBytes;
    const int c = static_cast<int>(within / (kSide * kSide));
    const int y = static_cast<int>(within / kSide % kSide), x = static_cast<int>(within % kSide);
    const int32_t s = samples[k];
    int row = y, col = x;
    if (augment) {
      const SampleDraws d = draw_sample(seed, epoch, static_cast<uint64_t>(s));
      row = source_row(y, d);
      col = source_col(x, d);
    }
    out[i] = normalise(source[s * kImageBytes + (c * kSide + row) * kSide + col], norm.mean[c],
                       norm.std[c]);
    if (within == 0) out_labels[k] = source_labels[s];
  });
  images = images_.f32(0, Shape{count, kChannels, kSide, kSide});
  labels = Tensor(out_labels, Shape{count}, Device::CUDA);
  return true;
}

}  // namespace psgd::data
