#include "engine/tensor.h"

#include <sstream>

namespace psgd {

const char* device_name(Device device) { return device == Device::CPU ? "cpu" : "cuda"; }

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::F32: return "float32";
    case DType::I32: return "int32";
    case DType::F64: return "float64";
    case DType::BF16: return "bfloat16";
  }
  return "?";
}

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::F64: return sizeof(double);
    case DType::BF16: return sizeof(bf16);
    default: return sizeof(float);
  }
}

Shape::Shape(std::initializer_list<int64_t> dims) {
  PSGD_CHECK(dims.size() <= kMaxRank, "a tensor has at most ", kMaxRank, " dimensions, got ",
             dims.size());
  for (int64_t d : dims) {
    PSGD_CHECK(d >= 0, "negative dimension ", d);
    dims_[rank_++] = d;
  }
}

int64_t Shape::operator[](int axis) const {
  PSGD_CHECK(axis >= 0 && axis < rank_, "axis ", axis, " out of range for shape ", str());
  return dims_[axis];
}

int64_t Shape::numel() const {
  int64_t n = 1;
  for (int i = 0; i < rank_; ++i) n *= dims_[i];
  return n;
}

bool Shape::operator==(const Shape& other) const {
  if (rank_ != other.rank_) return false;
  for (int i = 0; i < rank_; ++i)
    if (dims_[i] != other.dims_[i]) return false;
  return true;
}

std::string Shape::str() const {
  std::ostringstream s;
  s << "(";
  for (int i = 0; i < rank_; ++i) s << (i ? ", " : "") << dims_[i];
  s << ")";
  return s.str();
}

float* Tensor::f32() const {
  PSGD_CHECK(dtype == DType::F32, "expected a float32 tensor, got ", dtype_name(dtype));
  return static_cast<float*>(data);
}

int32_t* Tensor::i32() const {
  PSGD_CHECK(dtype == DType::I32, "expected an int32 tensor, got ", dtype_name(dtype));
  return static_cast<int32_t*>(data);
}

double* Tensor::f64() const {
  PSGD_CHECK(dtype == DType::F64, "expected a float64 tensor, got ", dtype_name(dtype));
  return static_cast<double*>(data);
}

bf16* Tensor::bf16s() const {
  PSGD_CHECK(dtype == DType::BF16, "expected a bfloat16 tensor, got ", dtype_name(dtype));
  return static_cast<bf16*>(data);
}

Tensor Tensor::reshaped(Shape s) const {
  PSGD_CHECK(s.numel() == numel(), "cannot view ", shape.str(), " as ", s.str());
  Tensor t = *this;
  t.shape = s;
  return t;
}

void check_shape(const char* op, const char* what, const Tensor& t, const Shape& expected) {
  PSGD_CHECK(t.shape == expected, op, ": ", what, " has shape ", t.shape.str(), ", expected ",
             expected.str());
}

void check_rank(const char* op, const char* what, const Tensor& t, int rank) {
  PSGD_CHECK(t.shape.rank() == rank, op, ": ", what, " must be ", rank, "-D, got ",
             t.shape.str());
}

}  // namespace psgd
