// Writes checkpoints on a background thread, so that the disk's flushes (4-9 ms for a ResNet-32
// checkpoint on our CI's disk, up to three files an epoch) overlap the next epoch instead of
// delaying it. The
// contents are copied from the device before submit() is called; each file is written
// atomically, in submission order. A failed write is reported by the next submit() or by
// finish(), and the file it would have replaced is left as it was.
#pragma once

#include <future>
#include <string>
#include <vector>

#include "engine/safetensors.h"

namespace psgd {

class CheckpointWriter {
 public:
  CheckpointWriter() = default;
  CheckpointWriter(const CheckpointWriter&) = delete;
  CheckpointWriter& operator=(const CheckpointWriter&) = delete;
  // Waits for a write in flight; its error, if any, is dropped (call finish() to see it).
  ~CheckpointWriter() { settle(); }

  // Writes `contents` to each of `paths`, in the background. Waits first for the previous
  // checkpoint (one at most is in flight) and throws its error.
  void submit(SafeTensorsWriter contents, std::vector<std::string> paths);
  // Waits until every submitted checkpoint is on disk; throws the error of a failed one.
  void finish();
  // The same on a path that already has an error to report: returns a failed write's message
  // ("" if none) instead of throwing it.
  std::string settle() noexcept;

 private:
  std::future<void> in_flight_;
};

}  // namespace psgd
