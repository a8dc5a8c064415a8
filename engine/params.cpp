#include "engine/params.h"

#include <algorithm>
#include <utility>

namespace psgd {

const char* role_name(ParamRole role) {
  switch (role) {
    case ParamRole::ConvWeight: return "conv_weight";
    case ParamRole::LinearWeight: return "linear_weight";
    case ParamRole::LinearBias: return "linear_bias";
    case ParamRole::BnWeight: return "bn_weight";
    case ParamRole::BnBias: return "bn_bias";
    case ParamRole::BnRunningMean: return "bn_running_mean";
    case ParamRole::BnRunningVar: return "bn_running_var";
    case ParamRole::BnBatchesTracked: return "bn_batches_tracked";
  }
  return "unknown";
}

ParamStorage storage_of(ParamRole role) {
  switch (role) {
    case ParamRole::BnRunningMean:
    case ParamRole::BnRunningVar: return ParamStorage::Buffer;
    case ParamRole::BnBatchesTracked: return ParamStorage::Counter;
    default: return ParamStorage::Trainable;
  }
}

int ParamStore::add(std::string name, Shape shape, ParamRole role) {
  PSGD_CHECK(!allocated_, "parameter '", name, "' registered after allocation");
  PSGD_CHECK(find(name) < 0, "parameter '", name, "' registered twice");
  int64_t offset = 0;
  switch (storage_of(role)) {
    case ParamStorage::Trainable: offset = std::exchange(trainable_count_, trainable_count_ + shape.numel()); break;
    case ParamStorage::Buffer: offset = std::exchange(buffer_count_, buffer_count_ + shape.numel()); break;
    case ParamStorage::Counter:
      PSGD_CHECK(shape.rank() == 0, "a batch counter is a scalar, '", name, "' has ", shape.str());
      offset = static_cast<int64_t>(counters_.size());
      counters_.push_back(0);
      break;
  }
  entries_.push_back({std::move(name), shape, role, offset, QuantSpec{}});
  return static_cast<int>(entries_.size()) - 1;
}

void ParamStore::allocate(Device device) {
  PSGD_CHECK(!allocated_, "parameters allocated twice");
  weights_ = DeviceBuffer(device, trainable_count_ * sizeof(float));
  grads_ = DeviceBuffer(device, trainable_count_ * sizeof(float));
  buffers_ = DeviceBuffer(device, buffer_count_ * sizeof(float));
  allocated_ = true;
}

void ParamStore::set_quant(int id, QuantSpec spec) {
  const ParamEntry& e = entry(id);
  PSGD_CHECK(storage_of(e.role) == ParamStorage::Trainable || !spec.quantized(), "'", e.name,
             "' (", role_name(e.role), ") cannot be quantized");
  PSGD_CHECK(spec.bits == 0 || (spec.bits >= 2 && spec.bits <= 8), "'", e.name,
             "': weight bits must be 2..8 (or 0 for float), got ", spec.bits);
  entries_[id].quant = spec;
}

const ParamEntry& ParamStore::entry(int id) const {
  PSGD_CHECK(id >= 0 && id < static_cast<int>(entries_.size()), "no parameter with id ", id);
  return entries_[id];
}

int ParamStore::find(std::string_view name) const {
  auto it = std::find_if(entries_.begin(), entries_.end(),
                         [&](const ParamEntry& e) { return e.name == name; });
  return it == entries_.end() ? -1 : static_cast<int>(it - entries_.begin());
}

const ParamEntry& ParamStore::checked(int id, ParamStorage storage, const char* what) const {
  const ParamEntry& e = entry(id);
  PSGD_CHECK(allocated_, "parameter '", e.name, "' used before allocation");
  PSGD_CHECK(storage_of(e.role) == storage, "'", e.name, "' (", role_name(e.role), ") has no ",
             what);
  return e;
}

Tensor ParamStore::value(int id) const {
  const ParamEntry& e = entry(id);
  if (storage_of(e.role) == ParamStorage::Buffer)
    return buffers_.f32(checked(id, ParamStorage::Buffer, "value").offset, e.shape);
  return weights_.f32(checked(id, ParamStorage::Trainable, "float value").offset, e.shape);
}

Tensor ParamStore::grad(int id) const {
  const ParamEntry& e = checked(id, ParamStorage::Trainable, "gradient");
  return grads_.f32(e.offset, e.shape);
}

int64_t& ParamStore::counter(int id) {
  return counters_[checked(id, ParamStorage::Counter, "batch counter").offset];
}

int64_t ParamStore::counter(int id) const {
  return counters_[checked(id, ParamStorage::Counter, "batch counter").offset];
}

Tensor ParamStore::flat(const DeviceBuffer& b, int64_t count) { return b.f32(0, Shape{count}); }

}  // namespace psgd
