// What psgd's benchmark tools (psgd-bench, psgd-profile) share: their options, and a reference
// network with W4 PSGD quantizers (first and last layers included) and its optimizer on a device,
// with a synthetic batch already there, as the loader leaves it.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/net.h"
#include "engine/optim.h"
#include "tools/cli_support.h"

namespace psgd::bench {

struct BenchOptions {
  std::string arch = "resnet32";
  int classes = 100;
  int64_t batch = 128;
  std::string device = "cpu";
  int threads = 0;
  bool strict_fp32 = false;
  bool bf16 = false;
  std::string conv = "auto";
  int w_bits = 4;
  float lambda_s = 150.0f;
};

// --arch, --classes, --batch, --device, --threads, --strict-fp32, --bf16, --conv, --w-bits,
// --lambda-s.
void add_bench_options(CLI::App& app, BenchOptions& o);

// The middle value, or for an even count the mean of the two middle ones (as Python's
// statistics.median, which compare.py's PyTorch side uses); values not empty.
double median(std::vector<double> values);

// Median milliseconds of `repeats` calls of `work` after `warmup` untimed ones; the device is
// drained before each clock reading.
double median_ms(Context& ctx, int warmup, int repeats, const std::function<void()>& work);

struct BenchSetup {
  // Checks the options (a GPU where asked, the numerics) with one-line errors.
  explicit BenchSetup(const BenchOptions& o);

  Device device;
  Context ctx;
  std::unique_ptr<Net> net;
  Optimizer optimizer;
  DeviceBuffer image_buffer, label_buffer;
  Tensor images, labels;  // (batch, C, H, W) float32 in [-1, 1); (batch) int32
};

}  // namespace psgd::bench
