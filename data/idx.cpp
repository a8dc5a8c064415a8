#include "data/idx.h"

#include <zlib.h>

#include <fstream>

#include "engine/check.h"

namespace psgd::data {
namespace {

constexpr uint8_t kUnsignedByte = 0x08;
constexpr int64_t kMaxElements = int64_t{1} << 34;

// Reads everything gzread gives (it passes uncompressed files through unchanged).
std::vector<uint8_t> read_all(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  PSGD_CHECK(f != nullptr, path, ": cannot open");
  std::vector<uint8_t> out;
  uint8_t buffer[1 << 16];
  int n = 0;
  while ((n = gzread(f, buffer, sizeof buffer)) > 0) out.insert(out.end(), buffer, buffer + n);
  int code = Z_OK;
  const std::string why = n < 0 ? gzerror(f, &code) : "";
  gzclose(f);
  PSGD_CHECK(n == 0, path, ": cannot decompress (", why, ")");
  return out;
}

}  // namespace

IdxArray read_idx(const std::string& path) {
  const std::vector<uint8_t> bytes = read_all(path);
  PSGD_CHECK(bytes.size() >= 4 && bytes[0] == 0 && bytes[1] == 0, path,
             ": not an IDX file (bad magic)");
  PSGD_CHECK(bytes[2] == kUnsignedByte, path, ": IDX element type 0x", std::hex, int{bytes[2]},
             " is not unsigned bytes");
  const int rank = bytes[3];
  PSGD_CHECK(rank >= 1 && rank <= 4 && bytes.size() >= 4 + 4 * static_cast<size_t>(rank), path,
             ": IDX header truncated or rank ", rank, " unsupported");
  IdxArray a;
  int64_t count = 1;
  for (int d = 0; d < rank; ++d) {
    const uint8_t* p = bytes.data() + 4 + 4 * d;
    const int64_t dim = int64_t{p[0]} << 24 | int64_t{p[1]} << 16 | int64_t{p[2]} << 8 | p[3];
    a.dims.push_back(dim);
    count *= dim;
    PSGD_CHECK(count <= kMaxElements, path, ": IDX dimensions are impossibly large");
  }
  const size_t header = 4 + 4 * static_cast<size_t>(rank);
  PSGD_CHECK(bytes.size() - header == static_cast<size_t>(count), path, ": IDX data holds ",
             bytes.size() - header, " bytes, the header promises ", count);
  a.values.assign(bytes.begin() + static_cast<std::ptrdiff_t>(header), bytes.end());
  return a;
}

void write_idx(const std::string& path, const IdxArray& a) {
  std::ofstream out(path, std::ios::binary);
  const uint8_t magic[4] = {0, 0, kUnsignedByte, static_cast<uint8_t>(a.dims.size())};
  out.write(reinterpret_cast<const char*>(magic), 4);
  for (int64_t d : a.dims) {
    const uint8_t be[4] = {static_cast<uint8_t>(d >> 24), static_cast<uint8_t>(d >> 16),
                           static_cast<uint8_t>(d >> 8), static_cast<uint8_t>(d)};
    out.write(reinterpret_cast<const char*>(be), 4);
  }
  out.write(reinterpret_cast<const char*>(a.values.data()), static_cast<std::streamsize>(a.values.size()));
  PSGD_CHECK(out.good(), path, ": cannot write");
}

}  // namespace psgd::data
