#include "engine/activation_quant.h"

#include <algorithm>
#include <limits>
#include <vector>

#include "engine/layers/elementwise.h"

namespace psgd {
namespace {

constexpr int kFloatBits = 32;

std::vector<float> host_values(const ParamStore& params, const std::string& name) {
  const int id = params.find(name);
  PSGD_CHECK(id >= 0, "no parameter '", name, "' for activation clipping");
  const Tensor v = params.value(id);
  std::vector<float> out(static_cast<size_t>(v.numel()));
  memory_copy(out.data(), Device::CPU, v.data, v.device, v.bytes());
  return out;
}

// max over channels of (beta_c + n * gamma_c), in float32 as the reference computes it.
float clip_max(const ParamStore& params, const std::string& bn, float n) {
  const std::vector<float> gamma = host_values(params, bn + ".weight");
  const std::vector<float> beta = host_values(params, bn + ".bias");
  float best = -std::numeric_limits<float>::infinity();
  for (size_t c = 0; c < gamma.size(); ++c) best = std::max(best, beta[c] + n * gamma[c]);
  return best;
}

}  // namespace

ActivationQuantSummary set_activation_quant(Net& net, const ActivationQuantConfig& config) {
  const int bits = config.bits == kFloatBits ? 0 : config.bits;
  PSGD_CHECK(config.clip_n > 0.0f, "the clipping range n must be positive, got ", config.clip_n);
  ActivationQuantSummary summary;
  for (Layer* layer : net.layers()) {
    auto* relu = dynamic_cast<ReLU*>(layer);
    if (!relu) continue;
    float fixed = 0.0f;
    if (bits > 0 && config.range == ActivationRange::Clipped && !relu->clip_bn().empty()) {
      fixed = clip_max(net.params(), relu->clip_bn(), config.clip_n);
      PSGD_CHECK(fixed > 0.0f, relu->name(), ": clipping range beta + ", config.clip_n,
                 " * gamma of '", relu->clip_bn(), "' is not positive (", fixed, ")");
    }
    relu->set_activation_quant(bits, fixed);
    if (bits > 0) ++(fixed > 0.0f ? summary.clipped : summary.running);
  }
  return summary;
}

}  // namespace psgd
