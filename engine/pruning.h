// Magnitude pruning of trained weights, for evaluation: the smallest |w| of the quantized
// tensors set to zero, per layer or over all of them at once.
#pragma once

#include <string>
#include <vector>

#include "engine/params.h"

namespace psgd {

enum class PruneScope : uint8_t { PerLayer, Global };

struct LayerSparsity {
  std::string name;
  int64_t zeros = 0, count = 0;
  double sparsity() const { return count ? static_cast<double>(zeros) / count : 0.0; }
};

// Zeroes exactly round(sparsity * n) weights with the smallest magnitudes (ties broken by
// position) among the quantized tensors: n is each tensor's size (PerLayer) or their total
// (Global). Returns the sparsity of each tensor afterwards. Works on host copies.
std::vector<LayerSparsity> prune_by_magnitude(ParamStore& params, double sparsity,
                                              PruneScope scope);

// The fraction of exact zeros in each quantized tensor.
std::vector<LayerSparsity> measure_sparsity(const ParamStore& params);

}  // namespace psgd
