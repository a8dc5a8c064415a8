#include "tests/helpers/dump_support.h"

#include "engine/layers/elementwise.h"
#include "kernels/rng.h"

namespace psgd::test {

Tensor Batch::images_tensor(const Net& net) const {
  const Shape& s = net.sample_shape();
  const int64_t n = static_cast<int64_t>(labels.size());
  return Tensor(const_cast<float*>(images.data()), Shape{n, s[0], s[1], s[2]}, Device::CPU);
}

Tensor Batch::labels_tensor() const {
  return Tensor(const_cast<int32_t*>(labels.data()), Shape{static_cast<int64_t>(labels.size())},
                Device::CPU);
}

Batch synthetic_batch(const Net& net, int batch, uint64_t seed, uint64_t stream) {
  Batch b;
  b.images.resize(static_cast<size_t>(batch * net.sample_shape().numel()));
  const uint64_t key = rng::stream_key(seed, 0x1111 + 2 * stream);
  for (size_t i = 0; i < b.images.size(); ++i) b.images[i] = 4.0f * rng::uniform(key, i) - 2.0f;
  const uint64_t label_key = rng::stream_key(seed, 0x1112 + 2 * stream);
  for (int i = 0; i < batch; ++i)
    b.labels.push_back(static_cast<int32_t>(rng::bits64(label_key, i) % net.classes()));
  return b;
}

Batch batch_from_file(const std::string& path) {
  const SafeTensorsFile file = SafeTensorsFile::read(path);
  const StTensor* images = file.find("images");
  const StTensor* labels = file.find("labels");
  PSGD_CHECK(images && images->dtype == StDType::F32 && labels && labels->dtype == StDType::I32,
             path, ": needs F32 'images' and I32 'labels'");
  Batch b;
  const auto* pixels = reinterpret_cast<const float*>(images->data);
  const auto* classes = reinterpret_cast<const int32_t*>(labels->data);
  b.images.assign(pixels, pixels + images->numel());
  b.labels.assign(classes, classes + labels->numel());
  return b;
}

void randomise_batch_norm(ParamStore& params, uint64_t seed) {
  for (int id = 0; id < static_cast<int>(params.entries().size()); ++id) {
    const ParamEntry& e = params.entry(id);
    const bool around_one = e.role == ParamRole::BnWeight || e.role == ParamRole::BnRunningVar;
    if (!around_one && e.role != ParamRole::BnBias && e.role != ParamRole::BnRunningMean) continue;
    const uint64_t key = rng::stream_key(seed ^ 0xB7u, id);
    const Tensor v = params.value(id);
    for (int64_t i = 0; i < v.numel(); ++i)
      v.f32()[i] = (around_one ? 0.5f : -0.5f) + rng::uniform(key, i);
  }
}

std::vector<int64_t> dims(const Shape& s) {
  std::vector<int64_t> d;
  for (int i = 0; i < s.rank(); ++i) d.push_back(s[i]);
  return d;
}

void add_relu_decisions(SafeTensorsWriter& w, const Net& net, const std::string& prefix) {
  const std::vector<const Layer*> layers = net.layers();
  std::vector<uint8_t> open;
  for (size_t i = 0; i < layers.size(); ++i) {
    if (!dynamic_cast<const ReLU*>(layers[i])) continue;
    const Tensor& y = net.layer_output(i);
    open.resize(static_cast<size_t>(y.numel()));
    for (size_t j = 0; j < open.size(); ++j) open[j] = y.f32()[j] > 0.0f;
    w.add(prefix + "relu_open." + layers[i]->name(), StDType::U8, dims(y.shape), open.data());
  }
}

}  // namespace psgd::test
