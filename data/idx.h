// The IDX format of MNIST and Fashion-MNIST (gzipped or not): a big-endian magic giving the
// element type and rank, the dimensions, then the data. Only unsigned bytes are accepted.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace psgd::data {

struct IdxArray {
  std::vector<int64_t> dims;
  std::vector<uint8_t> values;
};

IdxArray read_idx(const std::string& path);
// Writes uncompressed IDX (for tests and round trips).
void write_idx(const std::string& path, const IdxArray& array);

}  // namespace psgd::data
