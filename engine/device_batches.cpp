#include "engine/device_batches.h"

namespace psgd {
namespace {

// `t`'s bytes in `buffer` on `device` (growing it if needed), as a view of t's shape and type.
Tensor copy_into(DeviceBuffer& buffer, Device device, const Tensor& t) {
  if (buffer.bytes() < t.bytes()) buffer = DeviceBuffer(device, t.bytes());
  memory_copy(buffer.data(), device, t.data, t.device, t.bytes());
  Tensor view = t;
  view.data = buffer.data();
  view.device = device;
  return view;
}

}  // namespace

bool DeviceBatches::next(Tensor& images, Tensor& labels) {
  Tensor host_images, host_labels;
  if (!host_.next(host_images, host_labels)) return false;
  images = copy_into(images_, device_, host_images);
  labels = copy_into(labels_, device_, host_labels);
  return true;
}

}  // namespace psgd
