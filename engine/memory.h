// Owning device memory: the one place that allocates. Everything else holds Tensors (views).
#pragma once

#include <cstddef>

#include "engine/tensor.h"

namespace psgd {

// Move-only; 64-byte aligned on the CPU, cudaMalloc'd on CUDA. Zero-filled on creation.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(Device device, size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  Device device() const { return device_; }
  size_t bytes() const { return bytes_; }
  std::byte* data() const { return data_; }

  // A float32 view of `shape` starting `float_offset` floats into the buffer (bounds-checked).
  Tensor f32(int64_t float_offset, Shape shape) const;
  // A float64 view of `shape` starting `byte_offset` bytes into the buffer (8-byte aligned).
  Tensor f64(size_t byte_offset, Shape shape) const;
  // A view of `shape` elements of `dtype` starting `byte_offset` bytes into the buffer (aligned
  // to the element size).
  Tensor view(size_t byte_offset, Shape shape, DType dtype) const;

 private:
  void release() noexcept;

  std::byte* data_ = nullptr;
  size_t bytes_ = 0;
  Device device_ = Device::CPU;
};

// The most bytes held by DeviceBuffers on a device since the last reset: the peak-memory figure
// of the benchmarks (library workspaces included, as they are ours).
size_t memory_peak(Device device);
void memory_reset_peak(Device device);

// Copies between any two devices; synchronous.
void memory_copy(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes);
void memory_zero(void* dst, Device device, size_t bytes);

// dst = src: shapes and element types must match.
void tensor_copy(const Tensor& dst, const Tensor& src);

bool cuda_built();      // this build has the CUDA backend
bool cuda_available();  // built with CUDA and a device is visible
int cuda_device_count();
// Makes GPU `index` this thread's device for every later allocation, context and kernel.
void cuda_select_device(int index);

}  // namespace psgd
