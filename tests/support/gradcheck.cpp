#include "tests/support/gradcheck.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <sstream>

#include "tests/support/host_tensor.h"

namespace psgd::test {
namespace {

double weighted_sum(const Tensor& y, const Tensor& r) {
  double sum = 0.0;
  for (int64_t i = 0; i < y.numel(); ++i) sum += static_cast<double>(y.f32()[i]) * r.f32()[i];
  return sum;
}

// Compares `analytic` (n values) with central differences of `loss` around `values`. A probe
// whose one-sided differences disagree straddles a kink (a ReLU or max-pool switch inside the
// step) and says nothing about the gradient: it is skipped, and at most a quarter may be.
void compare(const std::string& what, float* values, const std::vector<float>& analytic,
             const std::function<double()>& loss, const GradCheckOptions& o) {
  const int64_t n = static_cast<int64_t>(analytic.size());
  double scale = 0.0;
  for (float g : analytic) scale = std::max(scale, static_cast<double>(std::fabs(g)));
  const double centre = loss();
  const int64_t stride = std::max<int64_t>(1, n / o.max_probes);
  int64_t probes = 0, failures = 0, kinks = 0;
  std::ostringstream first_failure;
  for (int64_t i = 0; i < n; i += stride) {
    const float saved = values[i];
    const float up = saved + o.step, down = saved - o.step;
    values[i] = up;
    const double loss_up = loss();
    values[i] = down;
    const double loss_down = loss();
    values[i] = saved;
    const double numeric = (loss_up - loss_down) / (static_cast<double>(up) - down);
    const double right = (loss_up - centre) / (static_cast<double>(up) - saved);
    const double left = (centre - loss_down) / (static_cast<double>(saved) - down);
    const double tolerance = o.rel_tolerance * std::fabs(numeric) + o.abs_tolerance * scale;
    ++probes;
    if (std::fabs(right - left) > 2 * tolerance) {
      ++kinks;
      continue;
    }
    if (std::fabs(numeric - analytic[i]) > tolerance && failures++ == 0)
      first_failure << what << "[" << i << "]: numeric " << numeric << ", analytic "
                    << analytic[i] << " (largest gradient " << scale << ")";
  }
  INFO(first_failure.str());
  CHECK_MESSAGE(failures == 0, what, ": ", failures, " of ", probes, " probes differ");
  CHECK_MESSAGE(4 * kinks <= probes, what, ": ", kinks, " of ", probes, " probes hit kinks");
}

std::vector<float> to_vector(const Tensor& t) { return {t.f32(), t.f32() + t.numel()}; }

void fill_parameters(ParamStore& params, uint64_t seed) {
  for (int id = 0; id < static_cast<int>(params.entries().size()); ++id) {
    const ParamEntry& e = params.entry(id);
    if (storage_of(e.role) == ParamStorage::Counter) continue;
    const bool positive = e.role == ParamRole::BnWeight || e.role == ParamRole::BnRunningVar;
    fill_uniform(params.value(id), positive ? 0.5f : -1.0f, positive ? 1.5f : 1.0f, seed,
                 1000 + id);
  }
}

}  // namespace

void check_layer_gradients(Layer& layer, ParamStore& params, const std::vector<Shape>& inputs,
                           const GradCheckOptions& opts, const InputFiller& fill,
                           const std::function<void()>& before_forward) {
  Context ctx(Device::CPU, 0, opts.seed);
  if (!params.allocated()) params.allocate(Device::CPU);
  fill_parameters(params, opts.seed);

  std::vector<std::unique_ptr<HostTensor>> x_store, dx_store, acc_store;
  std::vector<Tensor> x, dx, dx_acc;
  for (size_t i = 0; i < inputs.size(); ++i) {
    x_store.push_back(std::make_unique<HostTensor>(inputs[i]));
    if (fill)
      fill(static_cast<int>(i), x_store.back()->t());
    else
      fill_uniform(x_store.back()->t(), -1.0f, 1.0f, opts.seed, i);
    dx_store.push_back(std::make_unique<HostTensor>(inputs[i]));
    acc_store.push_back(std::make_unique<HostTensor>(inputs[i], 1.0f));
    x.push_back(x_store.back()->t());
    dx.push_back(dx_store.back()->t());
    dx_acc.push_back(acc_store.back()->t());
  }
  HostTensor y(layer.output_shape(inputs)), r(layer.output_shape(inputs));
  fill_uniform(r.t(), -1.0f, 1.0f, opts.seed, 99);
  layer.plan(Device::CPU, inputs);
  ctx.reserve_workspace(layer.workspace_floats(ctx, inputs));

  const auto loss = [&] {
    if (before_forward) before_forward();
    layer.forward(ctx, x, y.t(), Mode::Train);
    return weighted_sum(y.t(), r.t());
  };
  loss();
  const std::vector<ops::GradMode> overwrite(inputs.size(), ops::GradMode::Overwrite);
  const std::vector<ops::GradMode> accumulate(inputs.size(), ops::GradMode::Accumulate);
  layer.backward(ctx, x, y.t(), r.t(), dx, overwrite);
  const std::vector<float> param_grads = to_vector(params.grads());

  // Accumulate adds to what is there; parameter gradients are overwritten, never summed.
  layer.backward(ctx, x, y.t(), r.t(), dx_acc, accumulate);
  for (size_t i = 0; i < inputs.size(); ++i)
    for (int64_t j = 0; j < dx[i].numel(); ++j)
      REQUIRE(dx_acc[i].f32()[j] == doctest::Approx(1.0f + dx[i].f32()[j]).epsilon(1e-5));
  const std::vector<float> again = to_vector(params.grads());
  for (size_t j = 0; j < again.size(); ++j) REQUIRE(again[j] == param_grads[j]);

  for (size_t i = 0; i < inputs.size(); ++i)
    compare(layer.describe() + " input " + std::to_string(i), x[i].f32(), to_vector(dx[i]), loss,
            opts);
  for (int id = 0; id < static_cast<int>(params.entries().size()); ++id) {
    const ParamEntry& e = params.entry(id);
    if (storage_of(e.role) != ParamStorage::Trainable) continue;
    const auto begin = param_grads.begin() + e.offset;
    compare(e.name, params.value(id).f32(), {begin, begin + e.shape.numel()}, loss, opts);
  }
}

void check_net_gradients(Net& net, int64_t batch, const GradCheckOptions& opts) {
  Context ctx(Device::CPU, 0, opts.seed);
  const Shape& s = net.sample_shape();
  HostTensor images(Shape{batch, s[0], s[1], s[2]});
  fill_uniform(images.t(), -1.0f, 1.0f, opts.seed, 7);
  HostTensor r(Shape{batch, net.classes()});
  fill_uniform(r.t(), -1.0f, 1.0f, opts.seed, 8);

  const auto loss = [&] { return weighted_sum(net.forward(ctx, images.t(), Mode::Train), r.t()); };
  loss();
  net.backward(ctx, r.t());
  const std::vector<float> grads = to_vector(net.params().grads());
  const ParamStore& params = net.params();
  for (int id = 0; id < static_cast<int>(params.entries().size()); ++id) {
    const ParamEntry& e = params.entry(id);
    if (storage_of(e.role) != ParamStorage::Trainable) continue;
    const auto begin = grads.begin() + e.offset;
    compare(e.name, params.value(id).f32(), {begin, begin + e.shape.numel()}, loss, opts);
  }
}

}  // namespace psgd::test
