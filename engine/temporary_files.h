// Temporary files removed when the process is interrupted: an atomic write (write_file_atomic)
// cut off by Ctrl-C would otherwise leave its partial temporary file, hundreds of MB for a VGG16-bn
// checkpoint, beside the intact old one.
#pragma once

#include <string>

namespace psgd {

// Registers `path` for removal should SIGINT, SIGTERM or SIGHUP end the process while the guard
// lives (where, when the guard is made, those signals have their default action); the signal
// then ends the process as it would have. Holds up to a few paths at once, each up to 4095 bytes;
// others go unregistered.
class TemporaryFileGuard {
 public:
  explicit TemporaryFileGuard(const std::string& path);
  ~TemporaryFileGuard();
  TemporaryFileGuard(const TemporaryFileGuard&) = delete;
  TemporaryFileGuard& operator=(const TemporaryFileGuard&) = delete;

 private:
  int slot_ = -1;
};

}  // namespace psgd
