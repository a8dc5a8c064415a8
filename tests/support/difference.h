// Largest differences that cannot overlook a NaN: std::max(worst, NaN) keeps worst, so a result
// that went NaN would pass a tolerance check.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>

namespace psgd::test {

// The larger of `worst` and |a - b|; a NaN on one side only is an infinite difference.
inline double worse_difference(double worst, double a, double b) {
  if (std::isnan(a) || std::isnan(b))
    return std::isnan(a) && std::isnan(b) ? worst : std::numeric_limits<double>::infinity();
  return std::max(worst, std::fabs(a - b));
}

}  // namespace psgd::test
