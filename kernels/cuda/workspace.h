// Scratch regions carved from the context's workspace by the library-backed ops (cuDNN, cuBLAS),
// whose bf16 paths stage rounded weights and float32 results there.
#pragma once

#include <cstddef>

#include "engine/tensor.h"

namespace psgd::cuda {

// Regions laid out one after another, each starting on a 256-byte boundary as cuDNN and cuBLAS
// want their buffers (the workspace itself is cudaMalloc'd, so aligned at least as well). The
// first region starts at 0 and the last ends unpadded, so a single region costs nothing extra.
class WorkspaceLayout {
 public:
  // Adds a region of `bytes` after those so far; returns its byte offset.
  size_t add(size_t bytes) {
    const size_t offset = (end_ + kAlignment - 1) / kAlignment * kAlignment;
    end_ = offset + bytes;
    return offset;
  }
  size_t add(const Shape& shape, DType dtype) {
    return add(static_cast<size_t>(shape.numel()) * dtype_size(dtype));
  }
  // The workspace floats the regions take.
  int64_t floats() const {
    return static_cast<int64_t>((end_ + sizeof(float) - 1) / sizeof(float));
  }

 private:
  static constexpr size_t kAlignment = 256;
  size_t end_ = 0;
};

// The region at byte `offset` of `workspace` (a Context::workspace view) as `shape` elements of
// `dtype`.
inline Tensor workspace_region(const Tensor& workspace, size_t offset, const Shape& shape,
                               DType dtype) {
  Tensor t;
  t.data = static_cast<std::byte*>(workspace.data) + offset;
  t.shape = shape;
  t.dtype = dtype;
  t.device = workspace.device;
  return t;
}

}  // namespace psgd::cuda
