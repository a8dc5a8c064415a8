#include "engine/memory_cuda.h"

#include "engine/cuda_check.h"

namespace psgd::cuda_memory {

void* allocate(size_t bytes) {
  void* ptr = nullptr;
  CUDA_CHECK(cudaMalloc(&ptr, bytes));
  return ptr;
}

void release(void* ptr) noexcept { cudaFree(ptr); }

void copy(void* dst, const void* src, size_t bytes, int kind) {
  CUDA_CHECK(cudaMemcpy(dst, src, bytes, static_cast<cudaMemcpyKind>(kind)));
}

void zero(void* ptr, size_t bytes) { CUDA_CHECK(cudaMemset(ptr, 0, bytes)); }

bool device_present() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

}  // namespace psgd::cuda_memory
