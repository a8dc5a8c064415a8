// The per-layer quantization report: for each quantized tensor, its grid step and how far Q(w)
// is from w: the reference's MAPE and SSE, the SQNR in dB, and the sparsity of w and of Q(w).
#pragma once

#include <string>
#include <vector>

#include "engine/context.h"
#include "engine/params.h"

namespace psgd {

struct QuantReportRow {
  std::string name;
  int bits = 0;
  int64_t count = 0;
  double delta = 0;     // grid step, range fresh from the weights
  double mape = 0;      // mean(|w - Q(w)| / (|w| + 1e-12)), as the reference
  double sse = 0;       // sum((w - Q(w))^2), as the reference
  double sqnr_db = 0;   // 10 log10(sum w^2 / sse); infinite when Q(w) = w
  double sparsity = 0;  // fraction of w exactly zero
  double q_zeros = 0;   // fraction of Q(w) exactly zero
};

std::vector<QuantReportRow> quantization_report(Context& ctx, const ParamStore& params);

}  // namespace psgd
