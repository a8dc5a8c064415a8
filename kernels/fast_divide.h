// Division of unsigned 32-bit values by a divisor fixed before a kernel runs, as a multiply-high,
// a subtraction and two shifts (Granlund and Montgomery, "Division by invariant integers using
// multiplication", 1994). GPUs have no integer divider: a division costs dozens of instructions,
// more than a memory-bound kernel can spend on the index arithmetic of each element.
#pragma once

#include <cstdint>

#include "kernels/rng.h"  // PSGD_HOST_DEVICE

namespace psgd {

class FastDivisor {
 public:
  FastDivisor() = default;
  // divisor >= 1.
  PSGD_HOST_DEVICE explicit FastDivisor(uint32_t divisor) : divisor_(divisor) {
    int log2_ceil = 0;  // l = ceil(log2(divisor))
    while ((uint64_t{1} << log2_ceil) < divisor) ++log2_ceil;
    // m = floor(2^32 (2^l - d) / d) + 1, which fits in 32 bits for 1 <= d < 2^32.
    multiplier_ = static_cast<uint32_t>(
        ((uint64_t{1} << 32) * ((uint64_t{1} << log2_ceil) - divisor)) / divisor + 1);
    shift1_ = log2_ceil < 1 ? log2_ceil : 1;
    shift2_ = log2_ceil > 1 ? log2_ceil - 1 : 0;
  }

  PSGD_HOST_DEVICE uint32_t divisor() const { return divisor_; }

  // floor(n / divisor) for every 32-bit n.
  PSGD_HOST_DEVICE uint32_t divide(uint32_t n) const {
    const uint32_t high = multiply_high(multiplier_, n);
    return (high + ((n - high) >> shift1_)) >> shift2_;
  }

  PSGD_HOST_DEVICE uint32_t remainder(uint32_t n) const { return n - divide(n) * divisor_; }

 private:
  PSGD_HOST_DEVICE static uint32_t multiply_high(uint32_t a, uint32_t b) {
#ifdef __CUDA_ARCH__
    return __umulhi(a, b);
#else
    return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32);
#endif
  }

  uint32_t divisor_ = 1, multiplier_ = 1;
  int shift1_ = 0, shift2_ = 0;
};

}  // namespace psgd
