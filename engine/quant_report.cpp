#include "engine/quant_report.h"

#include <cmath>
#include <limits>

#include "engine/weight_quant.h"
#include "kernels/quant_math.h"

namespace psgd {

std::vector<QuantReportRow> quantization_report(Context& ctx, const ParamStore& params) {
  std::vector<QuantReportRow> rows;
  DeviceBuffer scratch(params.device(), 2 * sizeof(float));
  std::vector<float> w;
  for (int id = 0; id < static_cast<int>(params.entries().size()); ++id) {
    const ParamEntry& e = params.entry(id);
    if (!e.quant.quantized()) continue;
    const Tensor v = params.value(id);
    w.resize(static_cast<size_t>(v.numel()));
    memory_copy(w.data(), Device::CPU, v.data, v.device, v.bytes());
    QuantReportRow row{e.name, e.quant.bits, v.numel()};
    const float delta = fresh_delta(ctx, v, e.quant.bits, scratch.f32(0, Shape{2}));
    const float levels = static_cast<float>(quant::weight_levels(e.quant.bits));
    double signal = 0, zeros = 0, q_zeros = 0;
    for (float x : w) {
      const float q = quant::quantize_weight(x, delta, levels);
      const double err = static_cast<double>(x) - q;
      row.mape += std::fabs(err) / (std::fabs(x) + 1e-12);
      row.sse += err * err;
      signal += static_cast<double>(x) * x;
      zeros += x == 0.0f;
      q_zeros += q == 0.0f;
    }
    row.delta = delta;
    row.mape /= static_cast<double>(w.size());
    row.sqnr_db = row.sse > 0 ? 10.0 * std::log10(signal / row.sse)
                              : std::numeric_limits<double>::infinity();
    row.sparsity = zeros / static_cast<double>(w.size());
    row.q_zeros = q_zeros / static_cast<double>(w.size());
    rows.push_back(row);
  }
  return rows;
}

}  // namespace psgd
