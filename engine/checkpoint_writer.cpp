#include "engine/checkpoint_writer.h"

namespace psgd {

std::string CheckpointWriter::settle() noexcept {
  try {
    finish();
    return "";
  } catch (const std::exception& e) {
    return user_message(e);
  }
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
