#include "engine/memory.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <utility>

#include <sys/mman.h>

#ifdef PSGD_WITH_CUDA
#include <cuda_runtime.h>

#include "engine/memory_cuda.h"
#endif

namespace psgd {
namespace {

constexpr size_t kCpuAlignment = 64;
constexpr size_t kHugePage = size_t{2} << 20;

// Host memory for tensors. Buffers of a huge page or more are aligned to one and offered to
// transparent huge pages: the CPU kernels walk activations plane by plane, thousands of 4 KiB
// pages apart, and with small pages each plane costs a TLB miss.
std::byte* allocate_host(size_t bytes) {
  const size_t alignment = bytes >= kHugePage ? kHugePage : kCpuAlignment;
  const size_t rounded = (bytes + alignment - 1) / alignment * alignment;
  auto* data = static_cast<std::byte*>(std::aligned_alloc(alignment, rounded));
  PSGD_CHECK(data != nullptr, "out of host memory allocating ", bytes, " bytes");
  if (alignment == kHugePage) madvise(data, rounded, MADV_HUGEPAGE);  // advice only: may refuse
  return data;
}

#ifndef PSGD_WITH_CUDA
[[noreturn]] void no_cuda() {
  PSGD_FAIL("this psgd was built without CUDA; rebuild with -DPSGD_CUDA=ON or use the CPU");
}
#endif

}  // namespace

namespace {

struct Usage {
  std::atomic<size_t> in_use{0}, peak{0};
};

Usage& usage(Device device) {
  static Usage cpu, cuda;
  return device == Device::CPU ? cpu : cuda;
}

void count_allocation(Device device, size_t bytes) {
  Usage& u = usage(device);
  const size_t now = u.in_use += bytes;
  size_t peak = u.peak.load();
  while (now > peak && !u.peak.compare_exchange_weak(peak, now)) {
  }
}

}  // namespace

size_t memory_peak(Device device) {
  return usage(device).peak;
}
void memory_reset_peak(Device device) {
  usage(device).peak = usage(device).in_use.load();
}

DeviceBuffer::DeviceBuffer(Device device, size_t bytes) : bytes_(bytes), device_(device) {
  if (bytes == 0) return;
  if (device == Device::CPU) {
    data_ = allocate_host(bytes);
  } else {
#ifdef PSGD_WITH_CUDA
    data_ = static_cast<std::byte*>(cuda_memory::allocate(bytes));
#else
    no_cuda();
#endif
  }
  count_allocation(device_, bytes_);
  memory_zero(data_, device_, bytes_);
}

DeviceBuffer::~DeviceBuffer() {
  release();
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      bytes_(std::exchange(other.bytes_, 0)),
      device_(other.device_) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    release();
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
    device_ = other.device_;
  }
  return *this;
}

void DeviceBuffer::release() noexcept {
  if (!data_) return;
  usage(device_).in_use -= bytes_;
  if (device_ == Device::CPU) {
    std::free(data_);
  } else {
#ifdef PSGD_WITH_CUDA
    cuda_memory::release(data_);
#endif
  }
  data_ = nullptr;
  bytes_ = 0;
}

Tensor DeviceBuffer::f32(int64_t float_offset, Shape shape) const {
  PSGD_CHECK(float_offset >= 0 &&
                 static_cast<size_t>(float_offset + shape.numel()) * sizeof(float) <= bytes_,
             "view of ", shape.str(), " at float offset ", float_offset, " exceeds a buffer of ",
             bytes_, " bytes");
  return Tensor(reinterpret_cast<float*>(data_) + float_offset, shape, device_);
}

Tensor DeviceBuffer::f64(size_t byte_offset, Shape shape) const {
  PSGD_CHECK(byte_offset % sizeof(double) == 0 &&
                 byte_offset + static_cast<size_t>(shape.numel()) * sizeof(double) <= bytes_,
             "float64 view of ", shape.str(), " at byte ", byte_offset, " in a buffer of ", bytes_,
             " bytes");
  return Tensor(reinterpret_cast<double*>(data_ + byte_offset), shape, device_);
}

Tensor DeviceBuffer::view(size_t byte_offset, Shape shape, DType dtype) const {
  const size_t element = dtype_size(dtype);
  PSGD_CHECK(byte_offset % element == 0 &&
                 byte_offset + static_cast<size_t>(shape.numel()) * element <= bytes_,
             dtype_name(dtype), " view of ", shape.str(), " at byte ", byte_offset,
             " in a buffer of ", bytes_, " bytes");
  Tensor t;
  t.data = data_ + byte_offset;
  t.shape = shape;
  t.dtype = dtype;
  t.device = device_;
  return t;
}

void memory_copy(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) {
  if (bytes == 0) return;
  if (dst_device == Device::CPU && src_device == Device::CPU) {
    std::memcpy(dst, src, bytes);
    return;
  }
#ifdef PSGD_WITH_CUDA
  const cudaMemcpyKind kind = src_device == Device::CPU   ? cudaMemcpyHostToDevice
                              : dst_device == Device::CPU ? cudaMemcpyDeviceToHost
                                                          : cudaMemcpyDeviceToDevice;
  cuda_memory::copy(dst, src, bytes, kind);
#else
  no_cuda();
#endif
}

void memory_zero(void* dst, Device device, size_t bytes) {
  if (bytes == 0) return;
  if (device == Device::CPU) {
    std::memset(dst, 0, bytes);
    return;
  }
#ifdef PSGD_WITH_CUDA
  cuda_memory::zero(dst, bytes);
#else
  no_cuda();
#endif
}

void tensor_copy(const Tensor& dst, const Tensor& src) {
  PSGD_CHECK(dst.shape == src.shape && dst.dtype == src.dtype, "tensor_copy: ", src.shape.str(),
             " ", dtype_name(src.dtype), " into ", dst.shape.str(), " ", dtype_name(dst.dtype));
  memory_copy(dst.data, dst.device, src.data, src.device, src.bytes());
}

bool cuda_built() {
#ifdef PSGD_WITH_CUDA
  return true;
#else
  return false;
#endif
}

bool cuda_available() {
#ifdef PSGD_WITH_CUDA
  return cuda_memory::device_present();
#else
  return false;
#endif
}

int cuda_device_count() {
#ifdef PSGD_WITH_CUDA
  return cuda_memory::device_count();
#else
  return 0;
#endif
}

void cuda_select_device(int index) {
  const int count = cuda_device_count();
  PSGD_CHECK(index >= 0 && index < count, "GPU ", index, " does not exist: ", count,
             " GPU(s) visible");
#ifdef PSGD_WITH_CUDA
  cuda_memory::select(index);
#endif
}

}  // namespace psgd
