#include "tests/support/host_tensor.h"

#include <algorithm>
#include <numeric>

#include "kernels/rng.h"

namespace psgd::test {

void fill_uniform(const Tensor& t, float lo, float hi, uint64_t seed, uint64_t stream) {
  const uint64_t key = rng::stream_key(seed, stream);
  float* p = t.f32();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = lo + (hi - lo) * rng::uniform(key, i);
}

void fill_away_from_zero(const Tensor& t, float margin, uint64_t seed, uint64_t stream) {
  const uint64_t key = rng::stream_key(seed, stream);
  float* p = t.f32();
  for (int64_t i = 0; i < t.numel(); ++i) {
    const float magnitude = margin + (1.0f - margin) * rng::uniform(key, 2 * i);
    p[i] = rng::uniform(key, 2 * i + 1) < 0.5f ? -magnitude : magnitude;
  }
}

void fill_distinct(const Tensor& t, float spacing, uint64_t seed, uint64_t stream) {
  std::vector<int64_t> order(static_cast<size_t>(t.numel()));
  std::iota(order.begin(), order.end(), 0);
  const uint64_t key = rng::stream_key(seed, stream);
  for (size_t i = order.size(); i > 1; --i)  // Fisher-Yates with the counter RNG
    std::swap(order[i - 1], order[rng::bits64(key, i) % i]);
  float* p = t.f32();
  const float centre = 0.5f * spacing * static_cast<float>(order.size());
  for (size_t i = 0; i < order.size(); ++i) p[i] = spacing * static_cast<float>(order[i]) - centre;
}

}  // namespace psgd::test
