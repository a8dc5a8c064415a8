// How one parameter is quantized, as kept in the ParamStore table.
#pragma once

#include <cstdint>

namespace psgd {

enum class QuantTarget : uint8_t {
  Grid,  // the uniform grid of its bit width: quantization
  Zero,  // zero: pruning
};

struct QuantSpec {
  int bits = 0;      // 0: stays float; else 2..8 bits on the symmetric restricted grid
  bool psg = false;  // PSG scales its gradient during training
  QuantTarget target = QuantTarget::Grid;

  bool quantized() const { return bits > 0; }
};

}  // namespace psgd
