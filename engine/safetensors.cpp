#include "engine/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>

#include "engine/check.h"
#include "engine/parse_number.h"
#include "engine/temporary_files.h"

namespace psgd {
namespace {

constexpr uint64_t kMaxHeaderBytes = 100u << 20;  // the reference implementation's bound
constexpr uint64_t kMaxElements = 1ull << 40;

struct DTypeInfo {
  StDType dtype;
  const char* name;
  size_t size;
};
constexpr DTypeInfo kDTypes[] = {{StDType::F32, "F32", 4}, {StDType::F64, "F64", 8},
                                 {StDType::I64, "I64", 8}, {StDType::I32, "I32", 4},
                                 {StDType::U8, "U8", 1},   {StDType::I8, "I8", 1}};

const DTypeInfo& info(StDType dtype) {
  for (const DTypeInfo& d : kDTypes)
    if (d.dtype == dtype) return d;
  PSGD_FAIL("unknown safetensors dtype ", static_cast<int>(dtype));
}

std::string system_error(const std::string& what, const std::string& path) {
  return what + " '" + path + "': " + std::strerror(errno);
}

}  // namespace

const char* st_dtype_name(StDType dtype) { return info(dtype).name; }
size_t st_dtype_size(StDType dtype) { return info(dtype).size; }

int64_t StTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// ---- Reading ----------------------------------------------------------------------------------
SafeTensorsFile SafeTensorsFile::read(const std::string& path) {
  PSGD_CHECK(!std::filesystem::is_directory(path), path, ": a folder, not a checkpoint file");
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  PSGD_CHECK(in.good(), system_error("cannot open checkpoint", path));
  const std::streamsize size = in.tellg();
  std::vector<std::byte> bytes(static_cast<size_t>(std::max<std::streamsize>(size, 0)));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(bytes.data()), size);
  PSGD_CHECK(in.good() || size == 0, system_error("cannot read checkpoint", path));
  // PyTorch files start as a zip archive ("PK") or a pickle (protocol byte 0x80).
  const bool pytorch = bytes.size() >= 2 && ((bytes[0] == std::byte{'P'} && bytes[1] == std::byte{'K'}) ||
                                             bytes[0] == std::byte{0x80});
  PSGD_CHECK(!pytorch, path, ": a PyTorch checkpoint, not safetensors; convert it with "
                             "tools/convert_pth.py");
  return parse(std::move(bytes), path);
}

SafeTensorsFile SafeTensorsFile::parse(std::vector<std::byte> bytes, const std::string& origin) {
  const auto bad = [&](const auto&... why) { PSGD_FAIL(origin, ": not a valid safetensors file: ", why...); };
  if (bytes.size() < 8) bad("only ", bytes.size(), " bytes");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = header_len << 8 | static_cast<uint8_t>(bytes[i]);
  if (header_len > kMaxHeaderBytes || header_len > bytes.size() - 8)
    bad("header length ", header_len, " exceeds the file (", bytes.size(), " bytes)");

  const char* header_begin = reinterpret_cast<const char*>(bytes.data()) + 8;
  // ordered_json keeps the file's order, so tensors() and errors follow the file.
  nlohmann::ordered_json header = nlohmann::ordered_json::parse(header_begin, header_begin + header_len, nullptr,
                                                /*allow_exceptions=*/false);
  if (!header.is_object()) bad("the header is not a JSON object");

  SafeTensorsFile file;
  file.origin_ = origin;
  const std::byte* data = bytes.data() + 8 + header_len;
  const uint64_t data_size = bytes.size() - 8 - header_len;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const auto& [name, spec] : header.items()) {
    if (name == "__metadata__") {
      if (!spec.is_object()) bad("__metadata__ is not an object");
      for (const auto& [key, value] : spec.items()) {
        if (!value.is_string()) bad("metadata '", key, "' is not a string");
        file.metadata_[key] = value.get<std::string>();
      }
      continue;
    }
    if (!spec.is_object() || !spec.contains("dtype") || !spec.contains("shape") ||
        !spec.contains("data_offsets"))
      bad("tensor '", name, "' lacks dtype, shape or data_offsets");
    const auto& dt = spec["dtype"];
    const auto* known = dt.is_string()
                            ? std::find_if(std::begin(kDTypes), std::end(kDTypes),
                                           [&](const DTypeInfo& d) { return dt == d.name; })
                            : std::end(kDTypes);
    if (known == std::end(kDTypes)) bad("tensor '", name, "' has unsupported dtype ", dt.dump());

    StTensor t{name, known->dtype, {}, nullptr, 0};
    const auto& shape = spec["shape"];
    if (!shape.is_array() || shape.size() > 8) bad("tensor '", name, "' has an invalid shape");
    uint64_t numel = 1;
    for (const auto& d : shape) {
      if (!d.is_number_unsigned()) bad("tensor '", name, "' has an invalid dimension ", d.dump());
      const uint64_t dim = d.get<uint64_t>();
      if (dim != 0 && numel > kMaxElements / dim) bad("tensor '", name, "' is impossibly large");
      t.shape.push_back(static_cast<int64_t>(dim));
      numel *= dim;
    }
    const auto& off = spec["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() ||
        !off[1].is_number_unsigned())
      bad("tensor '", name, "' has invalid data_offsets");
    const uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
    if (begin > end || end > data_size)
      bad("tensor '", name, "' spans bytes [", begin, ", ", end, ") outside the data (",
          data_size, " bytes)");
    if (end - begin != numel * known->size)
      bad("tensor '", name, "' holds ", end - begin, " bytes but ", known->name, " ",
          shape.dump(), " needs ", numel * known->size);
    t.data = data + begin;
    t.bytes = end - begin;
    ranges.emplace_back(begin, end);
    file.tensors_.push_back(std::move(t));
  }
  // As the format requires: the tensors cover the data exactly, without overlaps or holes (a
  // file with bytes past its last tensor was cut from, or appended to, something else).
  std::sort(ranges.begin(), ranges.end());
  uint64_t covered = 0;
  for (const auto& [begin, end] : ranges) {
    if (begin < covered) bad("two tensors share bytes");
    if (begin > covered) bad("no tensor holds data bytes [", covered, ", ", begin, ")");
    covered = end;
  }
  if (covered != data_size)
    bad(data_size - covered, " bytes follow the last tensor's data (", data_size,
        " bytes of data)");
  file.bytes_ = std::move(bytes);  // the data pointers stay valid: the vector's buffer moves
  return file;
}

namespace {

// The metadata value of `key` as parse() reads the whole of it (nothing where it cannot), in
// [lowest, highest]; `fallback` where the key is absent.
template <class T, class Parse>
T metadata_value(const SafeTensorsFile& f, const std::string& key, T fallback, T lowest, T highest,
                 const char* kind, Parse parse) {
  const auto it = f.metadata().find(key);
  if (it == f.metadata().end()) return fallback;
  const std::string& text = it->second;
  const std::optional<T> value = parse(text);
  PSGD_CHECK(value && *value >= lowest && *value <= highest, f.origin(), ": metadata '", key,
             "' is '", text, "', not ", kind, " from ", lowest, " to ", highest);
  return *value;
}

}  // namespace

int64_t metadata_integer(const SafeTensorsFile& f, const std::string& key, int64_t fallback,
                         int64_t lowest, int64_t highest) {
  return metadata_value<int64_t>(f, key, fallback, lowest, highest, "a whole number",
                                 parse_whole_number);
}

double metadata_number(const SafeTensorsFile& f, const std::string& key, double fallback,
                       double lowest, double highest) {
  return metadata_value<double>(f, key, fallback, lowest, highest, "a finite number",
                                parse_finite_number);
}

const StTensor* SafeTensorsFile::find(std::string_view name) const {
  auto it = std::find_if(tensors_.begin(), tensors_.end(),
                         [&](const StTensor& t) { return t.name == name; });
  return it == tensors_.end() ? nullptr : &*it;
}

// ---- Writing ----------------------------------------------------------------------------------
void SafeTensorsWriter::add(std::string name, StDType dtype, std::vector<int64_t> shape,
                            const void* data) {
  PSGD_CHECK(name != "__metadata__", "'__metadata__' is reserved");
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  const size_t bytes = static_cast<size_t>(numel) * st_dtype_size(dtype);
  std::vector<std::byte> copy(bytes);
  if (bytes) std::memcpy(copy.data(), data, bytes);
  entries_.push_back({std::move(name), dtype, std::move(shape), std::move(copy)});
}

void SafeTensorsWriter::set_metadata(std::string key, std::string value) {
  metadata_[std::move(key)] = std::move(value);
}

std::vector<std::byte> SafeTensorsWriter::serialize() const {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata_.empty()) header["__metadata__"] = metadata_;
  uint64_t offset = 0;
  for (const Entry& e : entries_) {
    header[e.name] = {{"dtype", st_dtype_name(e.dtype)},
                      {"shape", e.shape},
                      {"data_offsets", {offset, offset + e.data.size()}}};
    offset += e.data.size();
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keeps the data 8-byte aligned

  std::vector<std::byte> bytes(8 + text.size() + offset);
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<std::byte>(uint64_t{text.size()} >> (8 * i));
  std::memcpy(bytes.data() + 8, text.data(), text.size());
  std::byte* out = bytes.data() + 8 + text.size();
  for (const Entry& e : entries_) {
    if (!e.data.empty()) std::memcpy(out, e.data.data(), e.data.size());
    out += e.data.size();
  }
  return bytes;
}

namespace {

// All of `bytes` to `fd`, or false with errno set.
bool write_all(int fd, const std::vector<std::byte>& bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EIO;
      return false;
    }
    done += static_cast<size_t>(n);
  }
  return true;
}

// A device, a pipe or a file descriptor's link (/dev/full, /dev/stdout) is written into:
// renaming a file over it would replace the node or the link itself. A pipe nobody reads is
// an error, not a wait.
void write_into(const std::string& path, const std::vector<std::byte>& bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  PSGD_CHECK(fd >= 0 || errno != ENXIO, path, ": a pipe that no process reads");
  PSGD_CHECK(fd >= 0, system_error("cannot open", path));
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  const bool written = write_all(fd, bytes);
  const std::string error = written ? "" : system_error("cannot write", path);
  PSGD_CHECK(::close(fd) == 0 || !written, system_error("cannot close", path));
  PSGD_CHECK(written, error);
}

}  // namespace

void write_file_atomic(const std::string& path, const std::vector<std::byte>& bytes) {
  struct stat entry = {};
  struct stat target = {};
  if (::lstat(path.c_str(), &entry) == 0) {
    const bool exists = ::stat(path.c_str(), &target) == 0;
    PSGD_CHECK(!exists || !S_ISDIR(target.st_mode), path, ": a folder, not a file");
    if (S_ISLNK(entry.st_mode)) {
      // A link to a regular file is kept: the file it names is replaced. A descriptor's link
      // (/dev/stdout is /proc/self/fd/1) is written into, whatever it leads to.
      const std::string to = std::filesystem::read_symlink(path).string();
      const bool descriptor = to.rfind("/proc/", 0) == 0 || to.rfind("/dev/fd/", 0) == 0;
      if (!descriptor && exists && S_ISREG(target.st_mode))
        return write_file_atomic(std::filesystem::canonical(path).string(), bytes);
      return write_into(path, bytes);
    }
    if (!S_ISREG(entry.st_mode)) return write_into(path, bytes);
  }
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  const TemporaryFileGuard removed_if_interrupted(tmp);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  PSGD_CHECK(fd >= 0, system_error("cannot create", tmp));
  const auto fail = [&](const std::string& what) {
    const std::string msg = system_error(what, tmp);
    ::close(fd);
    ::unlink(tmp.c_str());
    PSGD_FAIL(msg, " (", path, " left unchanged)");
  };
  if (!write_all(fd, bytes)) fail("cannot write");
  if (::fsync(fd) != 0) fail("cannot flush");
  if (::close(fd) != 0) {
    ::unlink(tmp.c_str());
    PSGD_FAIL(system_error("cannot close", tmp), " (", path, " left unchanged)");
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string msg = system_error("cannot rename onto", path);
    ::unlink(tmp.c_str());
    PSGD_FAIL(msg);
  }
  const std::string dir = std::filesystem::path(path).parent_path().string();
  const int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace psgd
