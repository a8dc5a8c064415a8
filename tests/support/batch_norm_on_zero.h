// BN + ReLU whose outputs land on 0, for checking that the backward's ReLU mask, recomputed from
// x (ops::batch_norm_backward given beta), takes the side the forward took.
#pragma once

#include <cstdint>

#include "engine/context.h"

namespace psgd::test {

struct MaskSides {
  int64_t open = 0, closed = 0;  // outputs built to land on 0, by the side they took
};

// On ctx's device, in its activation type (float32, or bf16 in the bf16 mode): every third value
// of each channel of x is one value a, and beta = -round((a - mean) * scale) from the device's
// own statistics, so that BN's output there is the product's rounding error: a few ulps either
// side of 0 where BN fuses the multiply-add (bn_math.h), exactly 0 where it does not. Requires
// the backward with the mask recomputed to give the bits of the backward reading the ReLU's
// output, for both gradient modes.
MaskSides check_relu_mask_on_zero(Context& ctx, const Shape& x_shape);

}  // namespace psgd::test
