#include "engine/pruning.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace psgd {
namespace {

struct HostTensorCopy {
  int id;
  std::vector<float> values;
};

std::vector<HostTensorCopy> quantized_tensors(const ParamStore& params) {
  std::vector<HostTensorCopy> out;
  for (int id = 0; id < static_cast<int>(params.entries().size()); ++id) {
    if (!params.entry(id).quant.quantized()) continue;
    const Tensor v = params.value(id);
    HostTensorCopy copy{id, std::vector<float>(static_cast<size_t>(v.numel()))};
    memory_copy(copy.values.data(), Device::CPU, v.data, v.device, v.bytes());
    out.push_back(std::move(copy));
  }
  return out;
}

// Zeroes the `k` entries of smallest magnitude among the given (tensor, index) positions.
void zero_smallest(std::vector<HostTensorCopy>& tensors,
                   std::vector<std::pair<int, int64_t>>& positions, int64_t k) {
  const auto magnitude = [&](const std::pair<int, int64_t>& p) {
    return std::fabs(tensors[p.first].values[p.second]);
  };
  k = std::clamp<int64_t>(k, 0, static_cast<int64_t>(positions.size()));
  std::nth_element(positions.begin(), positions.begin() + k, positions.end(),
                   [&](const auto& a, const auto& b) {
                     const float ma = magnitude(a), mb = magnitude(b);
                     return ma < mb || (ma == mb && a < b);
                   });
  for (int64_t i = 0; i < k; ++i) tensors[positions[i].first].values[positions[i].second] = 0.0f;
}

LayerSparsity count_zeros(const std::string& name, const std::vector<float>& values) {
  return {name, std::count(values.begin(), values.end(), 0.0f),
          static_cast<int64_t>(values.size())};
}

}  // namespace

std::vector<LayerSparsity> prune_by_magnitude(ParamStore& params, double sparsity,
                                              PruneScope scope) {
  PSGD_CHECK(sparsity >= 0.0 && sparsity <= 1.0, "sparsity must be in [0, 1], got ", sparsity);
  std::vector<HostTensorCopy> tensors = quantized_tensors(params);
  PSGD_CHECK(!tensors.empty(), "no quantized tensors to prune (all weights are float)");
  std::vector<std::pair<int, int64_t>> positions;
  const auto prune = [&](size_t first, size_t last) {
    positions.clear();
    for (size_t t = first; t < last; ++t)
      for (int64_t i = 0; i < static_cast<int64_t>(tensors[t].values.size()); ++i)
        positions.emplace_back(static_cast<int>(t), i);
    zero_smallest(tensors, positions, std::llround(sparsity * positions.size()));
  };
  if (scope == PruneScope::Global)
    prune(0, tensors.size());
  else
    for (size_t t = 0; t < tensors.size(); ++t) prune(t, t + 1);

  std::vector<LayerSparsity> report;
  for (const HostTensorCopy& t : tensors) {
    const Tensor v = params.value(t.id);
    memory_copy(v.data, v.device, t.values.data(), Device::CPU, v.bytes());
    report.push_back(count_zeros(params.entry(t.id).name, t.values));
  }
  return report;
}

std::vector<LayerSparsity> measure_sparsity(const ParamStore& params) {
  std::vector<LayerSparsity> report;
  for (const HostTensorCopy& t : quantized_tensors(params))
    report.push_back(count_zeros(params.entry(t.id).name, t.values));
  return report;
}

}  // namespace psgd
