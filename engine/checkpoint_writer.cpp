#include "engine/checkpoint_writer.h"

namespace psgd {

void CheckpointWriter::settle() noexcept {
  if (in_flight_.valid()) in_flight_.wait();
}

void CheckpointWriter::submit(SafeTensorsWriter contents, std::vector<std::string> paths) {
  finish();
  in_flight_ =
      std::async(std::launch::async, [contents = std::move(contents), paths = std::move(paths)] {
        const std::vector<std::byte> bytes = contents.serialize();
        for (const std::string& path : paths) write_file_atomic(path, bytes);
      });
}

void CheckpointWriter::finish() {
  if (in_flight_.valid()) in_flight_.get();
}

}  // namespace psgd
