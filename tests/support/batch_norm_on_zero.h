// BN + ReLU whose outputs land on 0, for checking that the backward's ReLU mask, recomputed from
// x (ops::batch_norm_backward given beta), takes the side the forward took.
#pragma once

#include <initializer_list>

#include "engine/context.h"

namespace psgd::test {

// Where outputs on 0 must be seen on both sides of the ReLU: in each shape, or over all the
// shapes together (a channel's outputs on 0 all take one side, so a shape of few channels may
// see one side only).
enum class BothSidesIn { EachShape, AllShapes };

// For each shape, on ctx's device, in its activation type (float32, or bf16 in the bf16 mode):
// every third value of each channel of x is one value a, and beta = -round((a - mean) * scale)
// from the device's own statistics, so that BN's output there is the product's rounding error: a
// few ulps either side of 0 where BN fuses the multiply-add (bn_math.h), exactly 0 where it does
// not. Requires the backward with the mask recomputed to give the bits of the backward reading
// the ReLU's output, for both gradient modes, and reports the sides the outputs took. Where the
// host compiler targets FMA (__FMA__), requires both sides, as `where` says: the CPU's BN and
// the GPU emulator's then fuse the products (a real GPU always does, but the check still keys on
// the host's flag).
void check_relu_mask_on_zero(Context& ctx, std::initializer_list<Shape> x_shapes,
                             BothSidesIn where);

}  // namespace psgd::test
