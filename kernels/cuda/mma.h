// One warp's tensor-core matrix product in TF32 (PTX mma.sync, cards from Ampere on:
// conv2d_tensor_core_available), and the rounding of float32 operands to TF32; the emulated build
// (tests/cuda_emulator) computes both on the host.
#pragma once

#include <cstdint>

namespace psgd::cuda {

// To TF32 precision (10 mantissa bits), rounding to nearest with ties away from zero: what cuDNN
// and cuBLAS do to float32 operands in TF32 mode. bf16 values pass unchanged.
__device__ inline float round_to_tf32(float v) {
#ifdef PSGD_CUDA_EMULATION
  return ::psgd::emu::round_to_tf32(v);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  return v;  // never runs: see mma_m16n8k8_tf32
#else
  uint32_t bits;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(bits) : "f"(v));
  return __uint_as_float(bits);
#endif
}

// d += a b for a 16x8 tile D, A 16x8 (row-major) and B 8x8 (column-major), every lane of the warp
// calling it with its fragments: lane 4 g + t holds A[g][t], A[g+8][t], A[g][t+4], A[g+8][t+4],
// B[t][g], B[t+4][g], and D's (g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1). Operands should already
// be TF32 (round_to_tf32); products are exact, sums in float32.
__device__ inline void mma_m16n8k8_tf32(float (&d)[4], const float (&a)[4], const float (&b)[2]) {
#ifdef PSGD_CUDA_EMULATION
  ::psgd::emu::warp_mma_m16n8k8_tf32(d, a, b);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // no TF32 tensor cores before Ampere: conv2d never runs these kernels there
#else
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(__float_as_uint(a[0])), "r"(__float_as_uint(a[1])), "r"(__float_as_uint(a[2])),
        "r"(__float_as_uint(a[3])), "r"(__float_as_uint(b[0])), "r"(__float_as_uint(b[1])));
#endif
}

}  // namespace psgd::cuda
