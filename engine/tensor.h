// Tensor: a shape, an element type, a device and a pointer to memory it does not own. No maths.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <type_traits>

#include "engine/bfloat16.h"
#include "engine/check.h"

namespace psgd {

enum class Device : uint8_t { CPU, CUDA };
// F64 is for small statistics only (sums exchanged between ranks); ops compute in F32. BF16 is
// for activations and their gradients in the bf16 mode (engine/bfloat16.h).
enum class DType : uint8_t { F32, I32, F64, BF16 };

const char* device_name(Device device);
const char* dtype_name(DType dtype);
size_t dtype_size(DType dtype);

// Up to four dimensions; 4-D tensors are NCHW.
class Shape {
 public:
  static constexpr int kMaxRank = 4;

  Shape() = default;
  Shape(std::initializer_list<int64_t> dims);

  int rank() const { return rank_; }
  int64_t operator[](int axis) const;
  int64_t numel() const;
  bool operator==(const Shape& other) const;
  bool operator!=(const Shape& other) const { return !(*this == other); }
  std::string str() const;  // "(2, 3, 32, 32)"

 private:
  std::array<int64_t, kMaxRank> dims_{};
  int rank_ = 0;
};

struct Tensor {
  void* data = nullptr;
  Shape shape;
  DType dtype = DType::F32;
  Device device = Device::CPU;

  Tensor() = default;
  Tensor(float* ptr, Shape s, Device dev) : data(ptr), shape(s), dtype(DType::F32), device(dev) {}
  Tensor(int32_t* ptr, Shape s, Device dev) : data(ptr), shape(s), dtype(DType::I32), device(dev) {}
  Tensor(double* ptr, Shape s, Device dev) : data(ptr), shape(s), dtype(DType::F64), device(dev) {}
  Tensor(bf16* ptr, Shape s, Device dev) : data(ptr), shape(s), dtype(DType::BF16), device(dev) {}

  int64_t numel() const { return shape.numel(); }
  size_t bytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype); }
  bool defined() const { return data != nullptr; }

  // Typed access; the element type is checked.
  float* f32() const;
  int32_t* i32() const;
  double* f64() const;
  bf16* bf16s() const;
  // The same for kernels written once for float and bf16 activations (T is float or bf16).
  template <class T>
  T* as() const {
    if constexpr (std::is_same_v<T, bf16>)
      return bf16s();
    else
      return f32();
  }

  // NCHW accessors for 4-D tensors.
  int64_t n() const { return shape[0]; }
  int64_t c() const { return shape[1]; }
  int64_t h() const { return shape[2]; }
  int64_t w() const { return shape[3]; }

  // The same memory seen with another shape of equal element count.
  Tensor reshaped(Shape s) const;
};

// Shape checks used by every op; they name the op and both shapes in the error.
void check_shape(const char* op, const char* what, const Tensor& t, const Shape& expected);
void check_rank(const char* op, const char* what, const Tensor& t, int rank);

// Calls f(T{}) with T the C++ element type of an activation tensor: float or bf16.
template <class F>
decltype(auto) with_activation_type(DType dtype, F&& f) {
  if (dtype == DType::BF16) return f(bf16{});
  PSGD_CHECK(dtype == DType::F32, "activations are float32 or bfloat16, not ", dtype_name(dtype));
  return f(float{});
}

}  // namespace psgd
