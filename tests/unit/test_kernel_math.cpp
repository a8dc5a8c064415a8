// The helpers the kernels share: the counter-based RNG and fast division (host and device), and
// the CPU's streaming stores.
#include <doctest/doctest.h>

#include <algorithm>
#include <vector>

#include "kernels/cpu/streaming_store.h"
#include "kernels/fast_divide.h"
#include "kernels/rng.h"

using namespace psgd;

TEST_CASE("counter RNG: fixed values guard its definition") {
  // tests/python/rng.py reproduces these; a change here breaks parity with saved masks.
  const uint64_t key = rng::stream_key(0, 0);
  CHECK(rng::mix64(0) == 0ull);
  CHECK(rng::mix64(1) == 0x5692161D100B05E5ull);
  CHECK(rng::uniform(key, 0) >= 0.0f);
  CHECK(rng::uniform(key, 0) < 1.0f);
  CHECK(rng::uniform(key, 0) != rng::uniform(key, 1));
}

TEST_CASE("fast division by an invariant divisor equals integer division") {
  std::vector<uint32_t> divisors = {1,           2,           3,           5,          7,    16,
                                    64,          100,         1000,        1024,       4095, 65537,
                                    0x7fffffffu, 0x80000000u, 0x80000001u, 0xffffffffu};
  const uint64_t key = rng::stream_key(17, 0);
  for (uint64_t i = 0; i < 300; ++i) divisors.push_back(1 + rng::bits64(key, i) % 0xffffffffu);
  for (uint32_t d : divisors) {
    const FastDivisor fast(d);
    std::vector<uint32_t> values = {0, 1, d - 1, d, d + 1, 2 * d - 1, 0xfffffffeu, 0xffffffffu};
    for (uint64_t i = 0; i < 300; ++i)
      values.push_back(static_cast<uint32_t>(rng::bits64(key, 1000 + d + i)));
    for (uint32_t n : values) {
      INFO(n, " / ", d);
      REQUIRE(fast.divide(n) == n / d);
      REQUIRE(fast.remainder(n) == n % d);
    }
  }
}

TEST_CASE("streaming stores copy every byte, at every alignment, and nothing else") {
  std::vector<unsigned char> source(1000), target(1100);
  for (size_t i = 0; i < source.size(); ++i) source[i] = static_cast<unsigned char>(i * 7 + 3);
  for (size_t offset = 0; offset < 70; ++offset)
    for (size_t bytes : {0, 1, 15, 16, 17, 63, 64, 65, 200, 929}) {
      CAPTURE(offset);
      CAPTURE(bytes);
      std::fill(target.begin(), target.end(), 0xab);
      cpu::stream_copy(target.data() + offset, source.data(), bytes);
      cpu::stream_fence();
      for (size_t i = 0; i < target.size(); ++i)
        REQUIRE(target[i] == (i >= offset && i < offset + bytes ? source[i - offset] : 0xab));
    }
}
