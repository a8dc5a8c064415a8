// Finite-difference gradient checks. The scalar under test is L = sum(y * r) for a fixed random
// r, accumulated in double, so its gradient with respect to y is exactly r: the analytic
// gradients come from backward(dy = r) and are compared with central differences of L.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "engine/layer.h"
#include "engine/net.h"
#include "engine/params.h"

namespace psgd::test {

struct GradCheckOptions {
  float step = 1e-2f;            // central-difference step
  double rel_tolerance = 1e-2;   // |numeric - analytic| <= rel * |numeric| + abs
  double abs_tolerance = 2e-3;   // relative to the largest gradient magnitude of the tensor
  int max_probes = 150;          // elements checked per tensor (evenly spread)
  uint64_t seed = 1;
};

// Returns a filled input for input slot i; the default fills uniform [-1, 1).
using InputFiller = std::function<void(int input, const Tensor& t)>;

// Checks d L / d x for every input and d L / d p for every trainable parameter in `params`
// that `layer` registered; also checks that GradMode::Accumulate adds to what was there.
// `before_forward` runs before each forward (to pin random state, e.g. dropout masks).
void check_layer_gradients(Layer& layer, ParamStore& params, const std::vector<Shape>& inputs,
                           const GradCheckOptions& opts = {}, const InputFiller& fill = {},
                           const std::function<void()>& before_forward = {});

// Checks d L / d p for (a spread of elements of) every trainable parameter of a whole network
// in Train mode, L = sum(logits * r).
void check_net_gradients(Net& net, int64_t batch, const GradCheckOptions& opts = {});

}  // namespace psgd::test
