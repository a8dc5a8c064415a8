// The CUDA half of engine/memory.cpp, compiled only with the CUDA backend.
#pragma once

#include <cstddef>

namespace psgd::cuda_memory {

void* allocate(size_t bytes);
void release(void* ptr) noexcept;
// kind: cudaMemcpyKind as an int, to keep cuda_runtime.h out of this header.
void copy(void* dst, const void* src, size_t bytes, int kind);
void zero(void* ptr, size_t bytes);
bool device_present();
int device_count();
void select(int index);

}  // namespace psgd::cuda_memory
