// The safetensors format, our checkpoint format: an 8-byte little-endian header length, a JSON
// header mapping names to {dtype, shape, data_offsets} (plus an optional "__metadata__" map of
// strings), then the raw little-endian data. Files are untrusted input: every field is checked.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "engine/check.h"

namespace psgd {

enum class StDType : uint8_t { F32, F64, I64, I32, U8, I8 };

const char* st_dtype_name(StDType dtype);  // "F32", ...
size_t st_dtype_size(StDType dtype);

struct StTensor {
  std::string name;
  StDType dtype;
  std::vector<int64_t> shape;
  const std::byte* data;  // into the file's bytes
  size_t bytes;

  int64_t numel() const;
};

class SafeTensorsFile {
 public:
  // Reads and validates a whole file; errors name the file and the problem.
  static SafeTensorsFile read(const std::string& path);
  // Validates bytes already in memory; `origin` names them in errors.
  static SafeTensorsFile parse(std::vector<std::byte> bytes, const std::string& origin);

  const std::vector<StTensor>& tensors() const { return tensors_; }
  const StTensor* find(std::string_view name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& origin() const { return origin_; }

 private:
  std::vector<std::byte> bytes_;
  std::vector<StTensor> tensors_;
  std::map<std::string, std::string> metadata_;
  std::string origin_;
};

// A metadata value read as a whole number in [lowest, highest], or as a finite number, or
// `fallback` where the key is absent; errors name the file, the key and the value.
int64_t metadata_integer(const SafeTensorsFile& f, const std::string& key, int64_t fallback,
                         int64_t lowest, int64_t highest);
double metadata_number(const SafeTensorsFile& f, const std::string& key, double fallback,
                       double lowest, double highest);

// Writes `bytes` to `path` atomically (temporary file, fsync, rename, directory fsync). A device,
// a pipe or a file descriptor's link at `path` (/dev/full, /dev/stdout) is written into instead,
// as renaming would replace it; a link to a regular file stays, and that file is replaced.
void write_file_atomic(const std::string& path, const std::vector<std::byte>& bytes);

class SafeTensorsWriter {
 public:
  // Copies the data; tensors are written in the order they were added.
  void add(std::string name, StDType dtype, std::vector<int64_t> shape, const void* data);
  void set_metadata(std::string key, std::string value);
  // The file's bytes.
  std::vector<std::byte> serialize() const;
  // Writes atomically: a temporary file beside `path`, flushed to disk, then renamed over it.
  // On any failure the previous file at `path` is left untouched.
  void write(const std::string& path) const { write_file_atomic(path, serialize()); }

 private:
  struct Entry {
    std::string name;
    StDType dtype;
    std::vector<int64_t> shape;
    std::vector<std::byte> data;
  };
  std::vector<Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace psgd
