#include "engine/checkpoint.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <sstream>
#include <vector>

namespace psgd {
namespace {

std::vector<int64_t> dims_of(const Shape& s) {
  std::vector<int64_t> d;
  for (int i = 0; i < s.rank(); ++i) d.push_back(s[i]);
  return d;
}

std::string dims_str(const std::vector<int64_t>& d) {
  std::ostringstream s;
  s << "(";
  for (size_t i = 0; i < d.size(); ++i) s << (i ? ", " : "") << d[i];
  s << ")";
  return s.str();
}

template <class Src>
void convert_floats(const std::byte* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    Src v;
    std::memcpy(&v, src + i * sizeof(Src), sizeof(Src));
    dst[i] = static_cast<float>(v);
  }
}

int64_t read_integer(const StTensor& t) {
  if (t.dtype == StDType::I64) {
    int64_t v;
    std::memcpy(&v, t.data, sizeof v);
    return v;
  }
  int32_t v;
  std::memcpy(&v, t.data, sizeof v);
  return v;
}

// The first of n values (of type T, unaligned) that is not a finite float32: NaN, an infinity,
// or a double beyond float32's range, which would load as an infinity.
template <class T>
std::optional<double> first_non_finite(const void* values, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    T v;
    std::memcpy(&v, static_cast<const std::byte*>(values) + i * sizeof(T), sizeof(T));
    if (!(std::fabs(static_cast<double>(v)) <= std::numeric_limits<float>::max()))
      return static_cast<double>(v);
  }
  return std::nullopt;
}

std::string describe(const std::string& name, double value) {
  std::ostringstream s;
  s << "tensor '" << name << "' holds " << value << " (not a finite float32)";
  return s.str();
}

}  // namespace

void check_finite(const std::string& where, const std::string& name, const float* values,
                  int64_t n) {
  const std::optional<double> bad = first_non_finite<float>(values, n);
  PSGD_CHECK(!bad, where, describe(name, bad.value_or(0.0)));
}

std::string non_finite_tensor(const ParamStore& params) {
  std::vector<float> host;
  for (int id = 0; id < static_cast<int>(params.entries().size()); ++id) {
    const ParamEntry& e = params.entry(id);
    if (storage_of(e.role) == ParamStorage::Counter) continue;
    const Tensor v = params.value(id);
    host.resize(static_cast<size_t>(v.numel()));
    memory_copy(host.data(), Device::CPU, v.data, v.device, v.bytes());
    if (const std::optional<double> bad = first_non_finite<float>(host.data(), v.numel()))
      return describe(e.name, *bad);
  }
  return "";
}

void add_params(SafeTensorsWriter& writer, const ParamStore& params) {
  for (int id = 0; id < static_cast<int>(params.entries().size()); ++id) {
    const ParamEntry& e = params.entry(id);
    if (storage_of(e.role) == ParamStorage::Counter) {
      const int64_t count = params.counter(id);
      writer.add(e.name, StDType::I64, {}, &count);
      continue;
    }
    const Tensor v = params.value(id);
    std::vector<float> host(static_cast<size_t>(v.numel()));
    memory_copy(host.data(), Device::CPU, v.data, v.device, v.bytes());
    check_finite("", e.name, host.data(), v.numel());
    writer.add(e.name, StDType::F32, dims_of(e.shape), host.data());
  }
}

void save_params(const ParamStore& params, const std::string& path,
                 const std::map<std::string, std::string>& metadata) {
  SafeTensorsWriter writer;
  add_params(writer, params);
  for (const auto& [key, value] : metadata) writer.set_metadata(key, value);
  writer.write(path);
}

void load_params(ParamStore& params, const SafeTensorsFile& file,
                 const std::string& ignored_prefix) {
  const std::string& origin = file.origin();
  for (const StTensor& t : file.tensors()) {
    const bool ignored = !ignored_prefix.empty() && t.name.rfind(ignored_prefix, 0) == 0;
    PSGD_CHECK(ignored || params.find(t.name) >= 0, origin, ": unexpected tensor '", t.name,
               "' (wrong architecture?)");
  }
  // Validate everything before changing anything, so a bad file leaves the store untouched.
  std::vector<const StTensor*> sources;
  for (const ParamEntry& e : params.entries()) {
    const StTensor* t = file.find(e.name);
    PSGD_CHECK(t != nullptr, origin, ": missing tensor '", e.name, "' (wrong architecture?)");
    const bool counter = storage_of(e.role) == ParamStorage::Counter;
    const bool dtype_ok = counter ? (t->dtype == StDType::I64 || t->dtype == StDType::I32)
                                  : (t->dtype == StDType::F32 || t->dtype == StDType::F64);
    PSGD_CHECK(dtype_ok, origin, ": tensor '", e.name, "' has dtype ", st_dtype_name(t->dtype),
               ", expected ", counter ? "I64" : "F32");
    PSGD_CHECK(t->shape == dims_of(e.shape), origin, ": tensor '", e.name, "' has shape ",
               dims_str(t->shape), ", the network expects ", e.shape.str(),
               " (wrong architecture or class count?)");
    if (!counter) {
      const std::optional<double> bad = t->dtype == StDType::F32
                                            ? first_non_finite<float>(t->data, t->numel())
                                            : first_non_finite<double>(t->data, t->numel());
      PSGD_CHECK(!bad, origin, ": ", describe(t->name, bad.value_or(0.0)));
    }
    sources.push_back(t);
  }
  std::vector<float> host;
  for (int id = 0; id < static_cast<int>(sources.size()); ++id) {
    const StTensor& t = *sources[id];
    if (storage_of(params.entry(id).role) == ParamStorage::Counter) {
      params.counter(id) = read_integer(t);
      continue;
    }
    host.resize(static_cast<size_t>(t.numel()));
    if (t.dtype == StDType::F32)
      convert_floats<float>(t.data, host.data(), t.numel());
    else
      convert_floats<double>(t.data, host.data(), t.numel());
    const Tensor v = params.value(id);
    memory_copy(v.data, v.device, host.data(), Device::CPU, v.bytes());
  }
}

void load_params(ParamStore& params, const std::string& path) {
  load_params(params, SafeTensorsFile::read(path));
}

}  // namespace psgd
