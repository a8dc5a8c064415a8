#include "tools/bench/bench_setup.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <utility>
#include <vector>

#include "kernels/rng.h"
#include "nets/nets.h"
#include "nets/quant_config.h"

namespace psgd::bench {
namespace {

Device checked_device(const BenchOptions& o) {
  const Device device = o.device == "cuda" ? Device::CUDA : Device::CPU;
  PSGD_CHECK(device == Device::CPU || cuda_available(), "--device cuda: no GPU is visible");
  PSGD_CHECK(!(o.bf16 && o.strict_fp32), "--bf16 and --strict-fp32 exclude each other");
  return device;
}

std::unique_ptr<Net> quantized_net(const BenchOptions& o, Device device) {
  auto net = make_net(o.arch, o.classes, device, 1);
  assign_quantizers(net->params(), {.w_bits = o.w_bits, .first_last = true, .psg = o.lambda_s > 0});
  return net;
}

Numerics::Conv conv_choice(const std::string& name) {
  if (name == "cudnn") return Numerics::Conv::Cudnn;
  if (name == "direct") return Numerics::Conv::Direct;
  if (name == "tensor-core") return Numerics::Conv::TensorCore;
  if (name == "widened") return Numerics::Conv::Widened;
  return Numerics::Conv::Auto;
}

}  // namespace

void add_bench_options(CLI::App& app, BenchOptions& o) {
  app.add_option("--arch", o.arch, "network")->capture_default_str();
  app.add_option("--classes", o.classes, "number of classes")->capture_default_str();
  app.add_option("--batch", o.batch, "batch size")->check(tools::positive())->capture_default_str();
  app.add_option("--device", o.device, "cpu or cuda")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  app.add_option("--threads", o.threads, "CPU threads (0: all cores)")
      ->check(tools::thread_count())
      ->capture_default_str();
  app.add_flag("--strict-fp32", o.strict_fp32, "GPU: no TF32");
  app.add_flag("--bf16", o.bf16, "bf16 activations (float32 weights and optimizer)");
  app.add_option("--conv", o.conv,
                 "GPU: how convolutions run: each direction the fastest of cuDNN's choice, psgd's "
                 "direct and tensor-core 3x3 kernels and (bf16) cuDNN's float32 kernels on "
                 "widened copies (auto), or always one")
      ->check(CLI::IsMember({"auto", "cudnn", "direct", "tensor-core", "widened"}))
      ->capture_default_str();
  app.add_option("--w-bits", o.w_bits, "weight bits of the quantizers")->capture_default_str();
  app.add_option("--lambda-s", o.lambda_s, "PSG strength")->capture_default_str();
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const size_t half = values.size() / 2;
  return values.size() % 2 ? values[half] : (values[half - 1] + values[half]) / 2.0;
}

double median_ms(Context& ctx, int warmup, int repeats, const std::function<void()>& work) {
  std::vector<double> ms;
  for (int i = 0; i < warmup + repeats; ++i) {
    ctx.synchronize();
    const auto start = std::chrono::steady_clock::now();
    work();
    ctx.synchronize();
    const std::chrono::duration<double, std::milli> took = std::chrono::steady_clock::now() - start;
    if (i >= warmup) ms.push_back(took.count());
  }
  return median(std::move(ms));
}

BenchSetup::BenchSetup(const BenchOptions& o)
    : device(checked_device(o)),
      ctx(device, o.threads, 1,
          {.tf32 = !o.strict_fp32, .bf16 = o.bf16, .conv = conv_choice(o.conv)}),
      net(quantized_net(o, device)),
      optimizer(net->params(), {.momentum = 0.9f, .weight_decay = 1e-4f, .lambda_s = o.lambda_s}) {
  const Shape& s = net->sample_shape();
  std::vector<float> x(static_cast<size_t>(o.batch * s.numel()));
  std::vector<int32_t> y(static_cast<size_t>(o.batch));
  const uint64_t key = rng::stream_key(1, 0);
  for (size_t i = 0; i < x.size(); ++i) x[i] = 2.0f * rng::uniform(key, i) - 1.0f;
  for (size_t i = 0; i < y.size(); ++i) y[i] = static_cast<int32_t>(i % o.classes);
  image_buffer = DeviceBuffer(device, x.size() * sizeof(float));
  label_buffer = DeviceBuffer(device, y.size() * sizeof(int32_t));
  memory_copy(image_buffer.data(), device, x.data(), Device::CPU, x.size() * sizeof(float));
  memory_copy(label_buffer.data(), device, y.data(), Device::CPU, y.size() * sizeof(int32_t));
  images = image_buffer.f32(0, Shape{o.batch, s[0], s[1], s[2]});
  labels = label_buffer.view(0, Shape{o.batch}, DType::I32);
}

}  // namespace psgd::bench
