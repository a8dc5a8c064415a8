// Partial sums that each thread of an OpenMP team accumulated on its own, added up.
#pragma once

#include <cstdint>

namespace psgd::cpu {

// out[i] = partial(0)[j] + partial(1)[j] + ... in thread order, j = source(i) (the partials may
// order the values otherwise), so that the same team gives the same bits.
template <class Partial, class Source>
void sum_in_thread_order(int team, int64_t count, Partial partial, Source source, float* out) {
#pragma omp parallel for schedule(static) num_threads(team)
  for (int64_t i = 0; i < count; ++i) {
    const int64_t j = source(i);
    float sum = 0.0f;
    for (int t = 0; t < team; ++t) sum += partial(t)[j];
    out[i] = sum;
  }
}

template <class Partial>
void sum_in_thread_order(int team, int64_t count, Partial partial, float* out) {
  const auto same = [](int64_t i) { return i; };
  sum_in_thread_order(team, count, partial, same, out);
}

}  // namespace psgd::cpu
