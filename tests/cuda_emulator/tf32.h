// TF32, as tensor cores read float32 operands: 10 mantissa bits, rounded to nearest.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace psgd::emu {

inline float to_tf32(float f) {
  if (!std::isfinite(f)) return f;
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  u = (u + 0x1000u) & 0xffffe000u;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

}  // namespace psgd::emu
