// ParamStore: every parameter, gradient and buffer of a network in a few flat buffers, carved
// into named views by a table. Names are PyTorch state_dict keys, so checkpoints map one to one.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "engine/memory.h"
#include "engine/quant_spec.h"

namespace psgd {

enum class ParamRole : uint8_t {
  ConvWeight,
  LinearWeight,
  LinearBias,
  BnWeight,
  BnBias,
  BnRunningMean,
  BnRunningVar,
  BnBatchesTracked,  // int64 count, PyTorch's num_batches_tracked
};

// Where a role's values live: trainable ones in `weights` (with a gradient in `grads`), running
// statistics in `buffers`, batch counts as int64 on the host.
enum class ParamStorage : uint8_t { Trainable, Buffer, Counter };

const char* role_name(ParamRole role);
ParamStorage storage_of(ParamRole role);

struct ParamEntry {
  std::string name;  // the PyTorch state_dict key
  Shape shape;
  ParamRole role;
  int64_t offset;  // elements into the flat storage of its kind
  QuantSpec quant;  // trainable tensors only; float by default
};

class ParamStore {
 public:
  // Registration, before allocate(): returns the id of the new entry.
  int add(std::string name, Shape shape, ParamRole role);
  // Allocates the flat buffers (zero-filled) once every entry is registered.
  void allocate(Device device);
  bool allocated() const { return allocated_; }
  Device device() const { return weights_.device(); }

  // Sets how a trainable tensor is quantized (bits 0 for float, else 2..8).
  void set_quant(int id, QuantSpec spec);

  const std::vector<ParamEntry>& entries() const { return entries_; }
  const ParamEntry& entry(int id) const;
  int find(std::string_view name) const;  // -1 when absent

  Tensor value(int id) const;  // trainable or buffer
  Tensor grad(int id) const;   // trainable only
  int64_t& counter(int id);    // BnBatchesTracked only
  int64_t counter(int id) const;

  // The flat buffers: (trainable elements) twice, then (buffer elements).
  Tensor weights() const { return flat(weights_, trainable_count_); }
  Tensor grads() const { return flat(grads_, trainable_count_); }
  Tensor buffers() const { return flat(buffers_, buffer_count_); }
  int64_t trainable_count() const { return trainable_count_; }

 private:
  static Tensor flat(const DeviceBuffer& b, int64_t count);
  const ParamEntry& checked(int id, ParamStorage storage, const char* what) const;

  std::vector<ParamEntry> entries_;
  int64_t trainable_count_ = 0;
  int64_t buffer_count_ = 0;
  std::vector<int64_t> counters_;
  DeviceBuffer weights_;
  DeviceBuffer grads_;
  DeviceBuffer buffers_;
  bool allocated_ = false;
};

}  // namespace psgd
