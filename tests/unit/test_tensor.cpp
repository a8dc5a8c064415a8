#include <cblas.h>
#include <doctest/doctest.h>

#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>

#include "engine/context.h"
#include "engine/memory.h"
#include "engine/tensor.h"

using namespace psgd;

TEST_CASE("shape: rank, element count, equality and text") {
  const Shape s{2, 3, 5, 7};
  CHECK(s.rank() == 4);
  CHECK(s.numel() == 210);
  CHECK(s[3] == 7);
  CHECK(s == Shape({2, 3, 5, 7}));
  CHECK(s != Shape({2, 3, 7, 5}));
  CHECK(s.str() == "(2, 3, 5, 7)");
  CHECK(Shape{}.numel() == 1);
}

TEST_CASE("shape: invalid dimensions are errors") {
  CHECK_THROWS_AS(Shape({1, 2, 3, 4, 5}), Error);
  CHECK_THROWS_AS(Shape({2, -1}), Error);
  CHECK_THROWS_WITH_AS(Shape({2, 3})[2], doctest::Contains("axis 2 out of range"), Error);
}

TEST_CASE("tensor: views and typed access") {
  DeviceBuffer buf(Device::CPU, 24 * sizeof(float));
  const Tensor t = buf.f32(0, Shape{2, 3, 2, 2});
  CHECK(t.n() == 2);
  CHECK(t.c() == 3);
  CHECK(t.bytes() == 96);
  CHECK(t.reshaped(Shape{2, 12}).shape == Shape({2, 12}));
  CHECK_THROWS_AS(t.reshaped(Shape{5, 5}), Error);
  CHECK_THROWS_WITH_AS(t.i32(), doctest::Contains("expected an int32 tensor"), Error);
  CHECK_THROWS_AS(buf.f32(20, Shape{5}), Error);
}

TEST_CASE("memory: buffers start zeroed and copy") {
  DeviceBuffer a(Device::CPU, 8 * sizeof(float)), b(Device::CPU, 8 * sizeof(float));
  const Tensor ta = a.f32(0, Shape{8}), tb = b.f32(0, Shape{8});
  for (int i = 0; i < 8; ++i) CHECK(ta.f32()[i] == 0.0f);
  for (int i = 0; i < 8; ++i) ta.f32()[i] = static_cast<float>(i);
  tensor_copy(tb, ta);
  CHECK(tb.f32()[7] == 7.0f);
  CHECK_THROWS_AS(tensor_copy(tb.reshaped(Shape{2, 4}), ta), Error);
}

namespace {

// The value of the "THPeligible" line in /proc/self/smaps for the mapping that holds `address`
// ("1" where the kernel may back it with huge pages), or "" where the kernel does not say.
std::string huge_page_eligibility(const void* address) {
  const auto at = reinterpret_cast<uintptr_t>(address);
  std::ifstream smaps("/proc/self/smaps");
  bool inside = false;
  for (std::string line; std::getline(smaps, line);) {
    uintptr_t start = 0, end = 0;
    char dash = 0;
    std::istringstream header(line);
    if (header >> std::hex >> start >> dash >> end && dash == '-') {
      inside = start <= at && at < end;
    } else if (inside && line.rfind("THPeligible:", 0) == 0) {
      return line.substr(line.find(':') + 1);
    }
  }
  return "";
}

bool huge_pages_possible() {
  std::ifstream setting("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string text;
  std::getline(setting, text);
  return !text.empty() && text.find("[never]") == std::string::npos;
}

}  // namespace

TEST_CASE("memory: host buffers of 2 MiB or more are huge-page aligned and offered huge pages") {
  const DeviceBuffer large(Device::CPU, 3 << 20), small(Device::CPU, 100);
  CHECK(reinterpret_cast<uintptr_t>(large.data()) % (2 << 20) == 0);
  CHECK(reinterpret_cast<uintptr_t>(small.data()) % 64 == 0);
  if (huge_pages_possible())
    CHECK(huge_page_eligibility(large.data()).find('1') != std::string::npos);
}

TEST_CASE("context: workspace grows at planning and refuses unplanned requests") {
  Context ctx(Device::CPU, 1, 5);
  CHECK(ctx.threads() == 1);
  CHECK(ctx.seed() == 5);
  ctx.reserve_workspace(100);
  CHECK(ctx.workspace(100).numel() == 100);
  CHECK_THROWS_WITH_AS(ctx.workspace(101), doctest::Contains("were planned"), Error);
  if (!cuda_available()) CHECK_THROWS_AS(Context(Device::CUDA), Error);
}

TEST_CASE("context: OpenBLAS runs on the OpenMP thread pool") {
  // The pthread build of OpenBLAS fights OpenMP's spinning threads for the cores.
  CHECK(openblas_get_parallel() == 2);
  Context ctx(Device::CPU, 2);
  CHECK(openblas_get_num_threads() == 2);
}
