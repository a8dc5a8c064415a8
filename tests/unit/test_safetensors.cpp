// The safetensors reader and writer: round trips, every kind of corruption, atomic writes, and
// the background checkpoint writer.
#include <doctest/doctest.h>
#include <sys/resource.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <iterator>
#include <thread>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "engine/checkpoint_writer.h"
#include "engine/safetensors.h"

using namespace psgd;
namespace fs = std::filesystem;

namespace {

std::vector<std::byte> with_header(const std::string& json, size_t data_bytes) {
  std::vector<std::byte> b(8 + json.size() + data_bytes);
  const uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) b[i] = static_cast<std::byte>(n >> (8 * i));
  std::memcpy(b.data() + 8, json.data(), json.size());
  return b;
}

void rejects(const std::vector<std::byte>& bytes, const std::string& why) {
  CAPTURE(why);
  CHECK_THROWS_WITH_AS(SafeTensorsFile::parse(bytes, "test.safetensors"),
                       doctest::Contains(why.c_str()), Error);
}

// A folder of the test case's own: ctest runs cases in parallel, and some list their folder.
fs::path scratch_dir(const char* test_case) {
  const fs::path dir = fs::temp_directory_path() / "psgd_test_safetensors" / test_case;
  fs::create_directories(dir);
  return dir;
}

}  // namespace

TEST_CASE("safetensors: round trip of dtypes, shapes, scalars and metadata") {
  const float f[6] = {1, -2, 3.5f, 0, 1e-30f, 7};
  const int64_t count = 391;
  SafeTensorsWriter w;
  w.add("a.weight", StDType::F32, {2, 3}, f);
  w.add("a.num_batches_tracked", StDType::I64, {}, &count);
  w.add("empty", StDType::F32, {0, 4}, nullptr);
  w.set_metadata("arch", "resnet32");
  const std::string path = (scratch_dir("round_trip") / "rt.safetensors").string();
  w.write(path);
  const SafeTensorsFile file = SafeTensorsFile::read(path);
  REQUIRE(file.tensors().size() == 3);
  const StTensor* a = file.find("a.weight");
  REQUIRE(a != nullptr);
  CHECK(a->dtype == StDType::F32);
  CHECK(a->shape == std::vector<int64_t>{2, 3});
  CHECK(std::memcmp(a->data, f, sizeof f) == 0);
  const StTensor* n = file.find("a.num_batches_tracked");
  CHECK(n->shape.empty());
  CHECK(n->numel() == 1);
  CHECK(file.find("empty")->bytes == 0);
  CHECK(file.metadata().at("arch") == "resnet32");
  CHECK(fs::file_size(path) % 8 == 0);  // header padded: data is 8-byte aligned
}

TEST_CASE("safetensors: corrupt files give one clear error each") {
  rejects({}, "only 0 bytes");
  rejects(std::vector<std::byte>(5), "only 5 bytes");
  auto huge = with_header("{}", 0);
  huge[5] = std::byte{1};
  rejects(huge, "exceeds the file");
  rejects(with_header("not json", 0), "not a JSON object");
  rejects(with_header(R"({"a":{"dtype":"F32","shape":[2]}})", 8), "lacks dtype, shape");
  rejects(with_header(R"({"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", 8),
          "unsupported dtype");
  rejects(with_header(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8),
          "invalid dimension");
  rejects(with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}})", 8),
          "outside the data");
  rejects(with_header(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8),
          "needs 12");
  rejects(with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                      R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                      8),
          "share bytes");
  rejects(with_header(R"({"a":{"dtype":"F32","shape":[1099511627776,1099511627776],)"
                      R"("data_offsets":[0,8]}})",
                      8),
          "impossibly large");
  rejects(with_header(R"({"__metadata__":{"k":1}})", 0), "is not a string");
  // The tensors must cover the data exactly: bytes appended, or a hole between two tensors.
  rejects(with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 12),
          "4 bytes follow the last tensor's data");
  rejects(with_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                      R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                      12),
          "no tensor holds data bytes [4, 8)");
  rejects(with_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8),
          "no tensor holds data bytes [0, 4)");
  CHECK_THROWS_WITH_AS(SafeTensorsFile::read("/nonexistent/x.safetensors"),
                       doctest::Contains("cannot open checkpoint"), Error);
  CHECK_THROWS_WITH_AS(SafeTensorsFile::read(scratch_dir("folder").string()),
                       doctest::Contains("a folder, not a checkpoint file"), Error);
}

TEST_CASE("safetensors: metadata numbers are checked for form and range") {
  SafeTensorsWriter w;
  for (const auto& [key, value] : {std::pair{"epoch", "12"},
                                   {"huge", "99999999999999999999"},
                                   {"word", "abc"},
                                   {"negative", "-5"},
                                   {"part", "3x"},
                                   {"share", "0.25"},
                                   {"nan", "nan"}})
    w.set_metadata(key, value);
  const SafeTensorsFile f = SafeTensorsFile::parse(w.serialize(), "m.safetensors");
  CHECK(metadata_integer(f, "epoch", 0, 0, 1000) == 12);
  CHECK(metadata_integer(f, "absent", 7, 0, 1000) == 7);
  for (const char* bad : {"huge", "word", "negative", "part", "share"}) {
    CAPTURE(bad);
    CHECK_THROWS_WITH_AS(metadata_integer(f, bad, 0, 0, 1000),
                         doctest::Contains("not a whole number from 0 to 1000"), Error);
  }
  CHECK(metadata_number(f, "share", 0.0, 0.0, 1.0) == 0.25);
  CHECK_THROWS_WITH_AS(metadata_number(f, "nan", 0.0, 0.0, 1.0),
                       doctest::Contains("m.safetensors: metadata 'nan' is 'nan'"), Error);
}

TEST_CASE("safetensors: a PyTorch checkpoint is recognised and pointed to the converter") {
  const std::string path = (scratch_dir("pytorch") / "model.pth").string();
  std::ofstream(path, std::ios::binary) << "PK\x03\x04 a zip archive";
  CHECK_THROWS_WITH_AS(SafeTensorsFile::read(path), doctest::Contains("convert it with tools/convert_pth.py"),
                       Error);
}

TEST_CASE("safetensors: a truncated file is refused") {
  const float f[4] = {1, 2, 3, 4};
  SafeTensorsWriter w;
  w.add("x", StDType::F32, {4}, f);
  const std::string path = (scratch_dir("truncated") / "trunc.safetensors").string();
  w.write(path);
  fs::resize_file(path, fs::file_size(path) - 3);
  CHECK_THROWS_WITH_AS(SafeTensorsFile::read(path), doctest::Contains("outside the data"), Error);
}

TEST_CASE("safetensors: writes are atomic and a failed write keeps the old file") {
  const fs::path dir = scratch_dir("atomic");
  const std::string path = (dir / "atomic.safetensors").string();
  const float one = 1.0f, two = 2.0f;
  SafeTensorsWriter first, second;
  first.add("x", StDType::F32, {1}, &one);
  second.add("x", StDType::F32, {1}, &two);
  first.write(path);
  second.write(path);
  CHECK(*reinterpret_cast<const float*>(SafeTensorsFile::read(path).find("x")->data) == 2.0f);
  for (const auto& entry : fs::directory_iterator(dir))
    CHECK(entry.path().string().find(".tmp.") == std::string::npos);

  // A full disk, simulated by a file-size limit: the write fails part way, the old file stays
  // and no temporary file is left behind.
  std::vector<float> big(4096, 3.0f);
  SafeTensorsWriter too_big;
  too_big.add("x", StDType::F32, {4096}, big.data());
  rlimit saved{};
  getrlimit(RLIMIT_FSIZE, &saved);
  const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  rlimit small = saved;
  small.rlim_cur = 4096;
  setrlimit(RLIMIT_FSIZE, &small);
  CHECK_THROWS_WITH_AS(too_big.write(path), doctest::Contains("left unchanged"), Error);
  setrlimit(RLIMIT_FSIZE, &saved);
  std::signal(SIGXFSZ, old_handler);
  CHECK(*reinterpret_cast<const float*>(SafeTensorsFile::read(path).find("x")->data) == 2.0f);
  for (const auto& entry : fs::directory_iterator(dir))
    CHECK(entry.path().string().find(".tmp.") == std::string::npos);

  CHECK_THROWS_WITH_AS(first.write((dir / "missing" / "x.safetensors").string()),
                       doctest::Contains("cannot create"), Error);
  CHECK(*reinterpret_cast<const float*>(SafeTensorsFile::read(path).find("x")->data) == 2.0f);
}

TEST_CASE("safetensors: devices, pipes and links are written through, never replaced") {
  const fs::path dir = scratch_dir("special");
  const auto bytes = [](const std::string& text) {
    return std::vector<std::byte>(reinterpret_cast<const std::byte*>(text.data()),
                                  reinterpret_cast<const std::byte*>(text.data() + text.size()));
  };
  const auto drain = [](int fd) {
    std::string got(64, '\0');
    const ssize_t n = ::read(fd, got.data(), got.size());
    got.resize(n > 0 ? static_cast<size_t>(n) : 0);
    return got;
  };
  // A pipe with a reader: the bytes arrive and the pipe stays a pipe (the reader opened without
  // waiting, so a writer that replaced the pipe would fail the checks, not hang).
  const fs::path fifo = dir / "pipe";
  fs::remove(fifo);
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  CHECK_THROWS_WITH_AS(write_file_atomic(fifo.string(), bytes("lost")),
                       doctest::Contains("a pipe that no process reads"), Error);
  const int reader = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK);
  REQUIRE(reader >= 0);
  write_file_atomic(fifo.string(), bytes("through the pipe"));
  CHECK(drain(reader) == "through the pipe");
  ::close(reader);
  CHECK(fs::is_fifo(fifo));
  // A descriptor's link, as /dev/stdout is: written into, the link kept.
  int ends[2];
  REQUIRE(::pipe(ends) == 0);
  const fs::path stdout_like = dir / "stdout";
  fs::remove(stdout_like);
  fs::create_symlink("/proc/self/fd/" + std::to_string(ends[1]), stdout_like);
  write_file_atomic(stdout_like.string(), bytes("to a descriptor"));
  ::close(ends[1]);
  CHECK(drain(ends[0]) == "to a descriptor");
  ::close(ends[0]);
  CHECK(fs::is_symlink(stdout_like));
  // A link to a regular file: the file is replaced, the link stays.
  const fs::path real = dir / "real.bin", link = dir / "link.bin";
  fs::remove(link);
  std::ofstream(real) << "old";
  fs::create_symlink(real, link);
  write_file_atomic(link.string(), bytes("new"));
  CHECK(fs::is_symlink(link));
  CHECK(std::string(std::istreambuf_iterator<char>(std::ifstream(real).rdbuf()), {}) == "new");
  // A full disk: /dev/full refuses every write, and stays the device it is.
  if (fs::is_character_file("/dev/full")) {
    CHECK_THROWS_WITH_AS(write_file_atomic("/dev/full", std::vector<std::byte>(16)),
                         doctest::Contains("No space left on device"), Error);
    CHECK(fs::is_character_file("/dev/full"));
  }
  CHECK_THROWS_WITH_AS(write_file_atomic(dir.string(), bytes("x")),
                       doctest::Contains("a folder, not a file"), Error);
}

TEST_CASE("safetensors: Ctrl-C during a write leaves no temporary file") {
  const fs::path dir = scratch_dir("interrupted"), path = dir / "last.safetensors";
  for (const auto& entry : fs::directory_iterator(dir)) fs::remove(entry.path());  // earlier runs'
  std::ofstream(path) << "the last good checkpoint";
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {                // a writer interrupted once its temporary file exists
    std::signal(SIGINT, SIG_DFL);  // doctest's handler, from the parent
    const fs::path partial = path.string() + ".tmp." + std::to_string(::getpid());
    const std::vector<std::byte> checkpoint(size_t{1} << 28);  // long enough to be caught writing
    std::atomic<bool> watching{false};
    std::thread interrupter([&] {
      watching = true;
      while (!fs::exists(partial)) std::this_thread::yield();
      ::kill(::getpid(), SIGINT);
    });
    interrupter.detach();
    while (!watching) std::this_thread::yield();
    write_file_atomic(path.string(), checkpoint);
    std::_Exit(3);  // not reached: the signal ends the process while it writes
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  CHECK(WIFSIGNALED(status));
  CHECK(WTERMSIG(status) == SIGINT);  // ended as the signal ends it
  for (const auto& entry : fs::directory_iterator(dir))
    CHECK(entry.path().filename() == "last.safetensors");  // no temporary file left
  CHECK(std::string(std::istreambuf_iterator<char>(std::ifstream(path).rdbuf()), {}) ==
        "the last good checkpoint");
}

TEST_CASE("checkpoint writer: background writes land in order, and a failed one is reported next") {
  const fs::path dir = scratch_dir("writer");
  const std::string a = (dir / "writer_a.safetensors").string(),
                    b = (dir / "writer_b.safetensors").string();
  const auto holding = [](float v) {
    SafeTensorsWriter w;
    w.add("x", StDType::F32, {1}, &v);
    return w;
  };
  const auto value_in = [](const std::string& path) {
    return *reinterpret_cast<const float*>(SafeTensorsFile::read(path).find("x")->data);
  };
  CheckpointWriter writer;
  writer.submit(holding(1.0f), {a, b});
  writer.submit(holding(2.0f), {a});
  writer.finish();
  CHECK(value_in(a) == 2.0f);
  CHECK(value_in(b) == 1.0f);

  const std::string nowhere = (dir / "missing" / "x.safetensors").string();
  writer.submit(holding(3.0f), {nowhere});
  CHECK_THROWS_WITH_AS(writer.submit(holding(4.0f), {a}), doctest::Contains("cannot create"),
                       Error);
  writer.finish();  // the failed write was reported once; nothing else was submitted after it
  CHECK(value_in(a) == 2.0f);
  writer.submit(holding(5.0f), {b, nowhere});
  CHECK_THROWS_WITH_AS(writer.finish(), doctest::Contains("cannot create"), Error);
  CHECK(value_in(b) == 5.0f);  // the files before the failed one are written
}
