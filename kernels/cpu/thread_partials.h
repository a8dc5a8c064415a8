// Partial sums that each thread of an OpenMP team accumulated on its own, added up.
#pragma once

#include <cstdint>

namespace psgd::cpu {

// out[i] = partial(0)[i] + partial(1)[i] + ... in thread order, so that the same team gives the
// same bits.
template <class Partial>
void sum_in_thread_order(int team, int64_t count, Partial partial, float* out) {
#pragma omp parallel for schedule(static) num_threads(team)
  for (int64_t i = 0; i < count; ++i) {
    float sum = 0.0f;
    for (int t = 0; t < team; ++t) sum += partial(t)[i];
    out[i] = sum;
  }
}

}  // namespace psgd::cpu
