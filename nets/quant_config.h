// Which tensors of a reference network are quantized, as REFERENCE.md says: every conv weight
// except the first (the 1x1 shortcut convs included) and every linear layer but the last
// (weights and biases) at w_bits; the first conv and the last linear layer (weight and bias)
// only with first/last quantization on, at 8 bits when w_bits < 4. BN is never quantized.
#pragma once

#include "engine/params.h"

namespace psgd {

struct WeightQuantConfig {
  int w_bits = 4;           // 2..8, or 32 for a float network
  bool first_last = false;  // quantize the first conv and the last linear layer too
  bool psg = true;          // PSG scales the quantized tensors' gradients in training
  QuantTarget target = QuantTarget::Grid;
};

// Writes the QuantSpec of every trainable tensor in the store.
void assign_quantizers(ParamStore& params, const WeightQuantConfig& config);

}  // namespace psgd
