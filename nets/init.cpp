#include "nets/init.h"

#include <cmath>
#include <vector>

#include "kernels/rng.h"

namespace psgd {
namespace {

// fan_in of a weight (out, in, ...) is in * prod(kernel).
int64_t fan_in(const Shape& weight) { return weight.numel() / weight[0]; }

// The weight that a bias "<prefix>.bias" belongs to: "<prefix>.weight".
const ParamEntry& weight_of_bias(const ParamStore& params, const ParamEntry& bias) {
  const std::string prefix = bias.name.substr(0, bias.name.rfind('.'));
  const int id = params.find(prefix + ".weight");
  PSGD_CHECK(id >= 0, "bias '", bias.name, "' has no matching weight");
  return params.entry(id);
}

}  // namespace

void init_pytorch_default(ParamStore& params, uint64_t seed) {
  for (int id = 0; id < static_cast<int>(params.entries().size()); ++id) {
    const ParamEntry& e = params.entry(id);
    if (storage_of(e.role) == ParamStorage::Counter) {
      params.counter(id) = 0;
      continue;
    }
    std::vector<float> host(static_cast<size_t>(e.shape.numel()));
    switch (e.role) {
      case ParamRole::ConvWeight:
      case ParamRole::LinearWeight:
      case ParamRole::LinearBias: {
        const Shape& w = e.role == ParamRole::LinearBias ? weight_of_bias(params, e).shape : e.shape;
        const float bound = 1.0f / std::sqrt(static_cast<float>(fan_in(w)));
        const uint64_t key = rng::stream_key(seed, static_cast<uint64_t>(id));
        for (size_t i = 0; i < host.size(); ++i)
          host[i] = (2.0f * rng::uniform(key, i) - 1.0f) * bound;
        break;
      }
      case ParamRole::BnWeight:
      case ParamRole::BnRunningVar: std::fill(host.begin(), host.end(), 1.0f); break;
      default: break;  // BN bias and running mean start at zero
    }
    const Tensor v = params.value(id);
    memory_copy(v.data, v.device, host.data(), Device::CPU, v.bytes());
  }
}

}  // namespace psgd
