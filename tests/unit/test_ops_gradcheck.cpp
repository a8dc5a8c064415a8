// Finite-difference checks of every layer's backward, for inputs and parameters, on awkward
// shapes: odd sizes, stride 2, batch 1 and 3, overlapping and partial windows.
#include <doctest/doctest.h>

#include "engine/layers/batch_norm.h"
#include "engine/layers/conv2d.h"
#include "engine/layers/elementwise.h"
#include "engine/layers/linear.h"
#include "engine/layers/pooling.h"
#include "tests/support/gradcheck.h"
#include "tests/support/host_tensor.h"

using namespace psgd;
using namespace psgd::test;

namespace {

struct ConvCase {
  Shape input;
  int out, kernel, stride, pad;
};

}  // namespace

TEST_CASE("gradcheck: conv2d") {
  const ConvCase cases[] = {
      {{3, 3, 7, 9}, 5, 3, 1, 1},  // odd sizes, batch 3
      {{1, 4, 7, 7}, 3, 3, 2, 1},  // stride 2 on an odd side, batch 1
      {{3, 2, 5, 6}, 4, 1, 2, 0},  // the 1x1 projection shortcut
      {{2, 3, 8, 5}, 2, 5, 2, 2},  // 5x5 kernel
      {{3, 2, 6, 7}, 3, 2, 1, 0},  // even kernel, no padding
      // Large enough for several cache panels: forward panels that end mid-row of an image,
      // backward panels of one image each.
      {{3, 8, 40, 50}, 4, 3, 1, 1},
      {{5, 8, 81, 61}, 3, 3, 2, 1},
  };
  for (const ConvCase& c : cases) {
    CAPTURE(c.input.str());
    CAPTURE(c.kernel);
    CAPTURE(c.stride);
    ParamStore params;
    Conv2d conv(params, "conv", static_cast<int>(c.input[1]), c.out, c.kernel, c.stride, c.pad);
    check_layer_gradients(conv, params, {c.input});
  }
}

TEST_CASE("gradcheck: batch norm (training statistics)") {
  for (const Shape& input : {Shape{3, 5, 3, 7}, Shape{1, 3, 5, 5}, Shape{6, 4}}) {
    CAPTURE(input.str());
    ParamStore params;
    BatchNorm bn(params, "bn", static_cast<int>(input[1]));
    check_layer_gradients(bn, params, {input}, {.step = 5e-3f});
  }
}

TEST_CASE("gradcheck: relu away from the kink") {
  ParamStore params;
  ReLU relu("relu");
  check_layer_gradients(relu, params, {Shape{3, 4, 5, 7}}, {},
                        [](int, const Tensor& t) { fill_away_from_zero(t, 0.05f, 3, 0); });
}

TEST_CASE("gradcheck: add") {
  ParamStore params;
  Add add("add");
  check_layer_gradients(add, params, {Shape{3, 2, 5, 3}, Shape{3, 2, 5, 3}});
}

TEST_CASE("gradcheck: average pooling") {
  struct PoolCase {
    Shape input;
    int kernel, stride;
  };
  const PoolCase cases[] = {{{2, 3, 8, 8}, 8, 8},   // global, as in ResNet
                            {{1, 2, 9, 9}, 3, 3},   // k x k
                            {{3, 2, 7, 7}, 3, 2},   // overlapping windows
                            {{3, 1, 7, 5}, 2, 2}};  // partial windows dropped
  for (const PoolCase& c : cases) {
    CAPTURE(c.input.str());
    ParamStore params;
    Pool2d pool("pool", PoolKind::Average, c.kernel, c.stride);
    check_layer_gradients(pool, params, {c.input});
  }
}

TEST_CASE("gradcheck: max pooling with distinct values") {
  for (const Shape& input : {Shape{3, 2, 6, 8}, Shape{1, 3, 7, 5}}) {
    CAPTURE(input.str());
    ParamStore params;
    Pool2d pool("pool", PoolKind::Max, 2, 2);
    check_layer_gradients(pool, params, {input}, {},
                          [](int, const Tensor& t) { fill_distinct(t, 0.05f, 4, 0); });
  }
}

TEST_CASE("gradcheck: linear on matrices and on flattened feature maps") {
  struct LinearCase {
    Shape input;
    int in, out;
  };
  const LinearCase cases[] = {{{3, 7}, 7, 5}, {{1, 6}, 6, 3}, {{3, 2, 3, 3}, 18, 4}};
  for (const LinearCase& c : cases) {
    CAPTURE(c.input.str());
    ParamStore params;
    Linear fc(params, "fc", c.in, c.out);
    check_layer_gradients(fc, params, {c.input});
  }
}

TEST_CASE("gradcheck: dropout with its mask pinned") {
  ParamStore params;
  Dropout dropout("drop", 0.5f, 3);
  check_layer_gradients(dropout, params, {Shape{3, 4, 5, 6}}, {}, {},
                        [&] { dropout.set_forwards(0); });
}
