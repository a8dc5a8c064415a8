#include "engine/checkpoint.h"

#include <cmath>
#include <cstring>
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

// A NaN or infinity in a weight or BN statistic makes every later result meaningless: such a
// tensor is never written, nor loaded. Returns the first non-finite value, or 0.
template <class T>
double first_non_finite(const std::byte* values, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    T v;
    std::memcpy(&v, values + i * sizeof(T), sizeof(T));
    if (!std::isfinite(v)) return static_cast<double>(v);
  }
  return 0.0;
}

void check_finite(double first_bad, const std::string& where, const std::string& name) {
  PSGD_CHECK(first_bad == 0.0, where, "tensor '", name, "' holds ", first_bad,
             " (its weights or statistics are not finite)");
}

}  // namespace

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
    check_finite(
        first_non_finite<float>(reinterpret_cast<const std::byte*>(host.data()), v.numel()), "",
        e.name);
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
    if (!counter)
      check_finite(t->dtype == StDType::F32 ? first_non_finite<float>(t->data, t->numel())
                                            : first_non_finite<double>(t->data, t->numel()),
                   origin + ": ", t->name);
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
