#include "engine/train_state.h"

#include <cstring>

#include "engine/checkpoint.h"
#include "engine/layers/elementwise.h"

namespace psgd {
namespace {

// Bounds on what a checkpoint may claim: beyond them its metadata is corrupt.
constexpr int64_t kMaxClasses = 100000;
constexpr int64_t kMaxEpochs = 1000000;

const std::string kOptimizer = std::string(kStatePrefix) + "optimizer.";
const std::string kRanges = std::string(kStatePrefix) + "ranges.";
const std::string kDropout = std::string(kStatePrefix) + "dropout.";

std::vector<float> to_host(const Tensor& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  memory_copy(out.data(), Device::CPU, t.data, t.device, t.bytes());
  return out;
}

const StTensor& require(const SafeTensorsFile& f, const std::string& name, StDType dtype,
                        int64_t numel) {
  const StTensor* t = f.find(name);
  PSGD_CHECK(t != nullptr, f.origin(), ": no '", name, "' (not a training checkpoint of this run?)");
  PSGD_CHECK(t->dtype == dtype && t->numel() == numel, f.origin(), ": '", name, "' is ",
             st_dtype_name(t->dtype), " with ", t->numel(), " values, expected ",
             st_dtype_name(dtype), " with ", numel);
  return *t;
}

int64_t read_i64(const SafeTensorsFile& f, const std::string& name) {
  int64_t v;
  std::memcpy(&v, require(f, name, StDType::I64, 1).data, sizeof v);
  return v;
}

std::vector<float> read_f32(const SafeTensorsFile& f, const std::string& name, int64_t numel) {
  const StTensor& t = require(f, name, StDType::F32, numel);
  std::vector<float> v(static_cast<size_t>(numel));
  std::memcpy(v.data(), t.data, t.bytes);
  check_finite(f.origin() + ": ", name, v.data(), numel);
  return v;
}

void add_f32(SafeTensorsWriter& w, const std::string& name, const std::vector<float>& values) {
  check_finite("", name, values.data(), static_cast<int64_t>(values.size()));
  w.add(name, StDType::F32, {static_cast<int64_t>(values.size())}, values.data());
}

}  // namespace

SafeTensorsWriter checkpoint_contents(const Net& net, const Optimizer& optimizer,
                                      const TrainProgress& progress,
                                      const std::map<std::string, std::string>& metadata) {
  SafeTensorsWriter w;
  add_params(w, net.params());
  for (int i = 0; i < optimizer.state_count(); ++i) {
    add_f32(w, kOptimizer + "state" + std::to_string(i), to_host(optimizer.state(i)));
  }
  const int64_t steps = optimizer.steps();
  w.add(kOptimizer + "steps", StDType::I64, {}, &steps);
  const RunningRanges& r = optimizer.ranges();
  const std::vector<float> lo = r.x_min(), hi = r.x_max();
  const int64_t started = r.started();
  add_f32(w, kRanges + "x_min", lo);
  add_f32(w, kRanges + "x_max", hi);
  w.add(kRanges + "started", StDType::I64, {}, &started);
  for (const Layer* layer : net.layers())
    if (const auto* d = dynamic_cast<const Dropout*>(layer)) {
      const int64_t forwards = static_cast<int64_t>(d->forwards());
      w.add(kDropout + d->name(), StDType::I64, {}, &forwards);
    }
  for (const auto& [key, value] : metadata) w.set_metadata(key, value);
  w.set_metadata("arch", net.arch());
  w.set_metadata("classes", std::to_string(net.classes()));
  w.set_metadata("epoch", std::to_string(progress.epoch));
  w.set_metadata("best_fp", std::to_string(progress.best_fp));
  w.set_metadata("best_lp", std::to_string(progress.best_lp));
  return w;
}

TrainProgress load_checkpoint(const std::string& path, Net& net, Optimizer* optimizer) {
  const SafeTensorsFile f = SafeTensorsFile::read(path);
  const auto& meta = f.metadata();
  if (meta.count("arch"))
    PSGD_CHECK(meta.at("arch") == net.arch(), path, ": a ", meta.at("arch"),
               " checkpoint cannot start a ", net.arch());
  const int64_t classes = metadata_integer(f, "classes", net.classes(), 1, kMaxClasses);
  PSGD_CHECK(classes == net.classes(), path, ": trained for ", classes,
             " classes, the network has ", net.classes());
  load_params(net.params(), f, kStatePrefix);
  TrainProgress progress{metadata_integer(f, "epoch", 0, 0, kMaxEpochs),
                         metadata_number(f, "best_fp", 0.0, 0.0, 1.0),
                         metadata_number(f, "best_lp", 0.0, 0.0, 1.0)};
  if (!optimizer) return progress;

  const int64_t n = net.params().trainable_count();
  for (int i = 0; i < optimizer->state_count(); ++i) {
    const std::vector<float> state = read_f32(f, kOptimizer + "state" + std::to_string(i), n);
    const Tensor t = optimizer->state(i);
    memory_copy(t.data, t.device, state.data(), Device::CPU, t.bytes());
  }
  optimizer->set_steps(read_i64(f, kOptimizer + "steps"));
  const int64_t ranges = static_cast<int64_t>(optimizer->ranges().ids().size());
  if (read_i64(f, kRanges + "started"))
    optimizer->ranges().restore(read_f32(f, kRanges + "x_min", ranges),
                                read_f32(f, kRanges + "x_max", ranges));
  for (Layer* layer : net.layers())
    if (auto* d = dynamic_cast<Dropout*>(layer))
      d->set_forwards(static_cast<uint64_t>(read_i64(f, kDropout + d->name())));
  return progress;
}

}  // namespace psgd
