#include <cblas.h>
#include <doctest/doctest.h>

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
