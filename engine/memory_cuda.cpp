#include "engine/memory_cuda.h"

#include "engine/cuda_check.h"

namespace psgd::cuda_memory {

void* allocate(size_t bytes) {
  void* ptr = nullptr;
  const cudaError_t status = cudaMalloc(&ptr, bytes);
  if (status == cudaErrorMemoryAllocation) {
    cudaGetLastError();  // clear it, so that later launches do not report it
    size_t free = 0, total = 0;
    cudaMemGetInfo(&free, &total);
    PSGD_FAIL("out of GPU memory: cudaMalloc of ", bytes >> 20, " MiB with ", free >> 20,
              " MiB of ", total >> 20, " MiB free; try a smaller --batch-size");
  }
  CUDA_CHECK(status);
  return ptr;
}

void release(void* ptr) noexcept { cudaFree(ptr); }

void copy(void* dst, const void* src, size_t bytes, int kind) {
  CUDA_CHECK(cudaMemcpy(dst, src, bytes, static_cast<cudaMemcpyKind>(kind)));
}

void zero(void* ptr, size_t bytes) { CUDA_CHECK(cudaMemset(ptr, 0, bytes)); }

bool device_present() { return device_count() > 0; }

int device_count() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess ? count : 0;
}

void select(int index) { CUDA_CHECK(cudaSetDevice(index)); }

}  // namespace psgd::cuda_memory
