// Counter-based random numbers: a pure function of (seed, stream, index), so that any element of
// any random tensor can be computed independently, in any order, on the CPU or in a CUDA kernel,
// with identical bits. Built on the splitmix64 finaliser; tests/python/rng.py is its twin.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define PSGD_HOST_DEVICE __host__ __device__
#else
#define PSGD_HOST_DEVICE
#endif

namespace psgd::rng {

inline constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;

PSGD_HOST_DEVICE inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// The key of one random stream: callers derive `stream` from what they randomise
// (a layer and a step, a parameter, a sample and an epoch).
PSGD_HOST_DEVICE inline uint64_t stream_key(uint64_t seed, uint64_t stream) {
  return mix64(seed + kGolden * (stream + 1));
}

PSGD_HOST_DEVICE inline uint64_t bits64(uint64_t key, uint64_t index) {
  return mix64(key + kGolden * (index + 1));
}

// Uniform in [0, 1) with 24 random bits: exactly representable as a float.
PSGD_HOST_DEVICE inline float uniform(uint64_t key, uint64_t index) {
  return static_cast<float>(bits64(key, index) >> 40) * (1.0f / 16777216.0f);
}

}  // namespace psgd::rng
