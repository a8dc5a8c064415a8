#include "nets/quant_config.h"

namespace psgd {
namespace {

constexpr int kFloatBits = 32;
constexpr int kFirstLastBitsBelow4 = 8;

bool is_weight_like(ParamRole role) {
  return role == ParamRole::ConvWeight || role == ParamRole::LinearWeight ||
         role == ParamRole::LinearBias;
}

}  // namespace

void assign_quantizers(ParamStore& params, const WeightQuantConfig& config) {
  PSGD_CHECK(config.w_bits == kFloatBits || (config.w_bits >= 2 && config.w_bits <= 8),
             "weight bits must be 2..8 or 32, got ", config.w_bits);
  const int count = static_cast<int>(params.entries().size());
  int first_conv = -1, last_linear = -1;
  for (int id = 0; id < count; ++id) {
    const ParamRole role = params.entry(id).role;
    if (role == ParamRole::ConvWeight && first_conv < 0) first_conv = id;
    if (role == ParamRole::LinearWeight) last_linear = id;
  }
  // The last layer's bias is registered right after its weight.
  const int last_bias = last_linear + 1 < count &&
                                params.entry(last_linear + 1).role == ParamRole::LinearBias
                            ? last_linear + 1
                            : -1;
  for (int id = 0; id < count; ++id) {
    const ParamEntry& e = params.entry(id);
    if (storage_of(e.role) != ParamStorage::Trainable) continue;
    QuantSpec spec;
    if (is_weight_like(e.role) && config.w_bits != kFloatBits) {
      const bool edge = id == first_conv || id == last_linear || id == last_bias;
      if (!edge)
        spec.bits = config.w_bits;
      else if (config.first_last)
        spec.bits = config.w_bits < 4 ? kFirstLastBitsBelow4 : config.w_bits;
    }
    spec.psg = spec.quantized() && config.psg;
    spec.target = config.target;
    params.set_quant(id, spec);
  }
}

}  // namespace psgd
