// PyTorch's default initialisation, reproduced from our counter-based RNG: conv and linear
// weights kaiming-uniform with a = sqrt(5), i.e. uniform in +-1/sqrt(fan_in); linear biases
// uniform in +-1/sqrt(fan_in); BN weight 1, bias 0, running mean 0, variance 1, count 0.
#pragma once

#include <cstdint>

#include "engine/params.h"

namespace psgd {

void init_pytorch_default(ParamStore& params, uint64_t seed);

}  // namespace psgd
