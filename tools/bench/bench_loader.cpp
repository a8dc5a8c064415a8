// psgd-bench-loader: how many augmented, normalised images per second the loader prepares on
// its one background thread (= per CPU core), over whole epochs of a dataset.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>

#include "data/dataset.h"
#include "data/importers.h"
#include "data/loader.h"
#include "tools/cli_support.h"

using namespace psgd;
using namespace psgd::data;

int main(int argc, char** argv) {
  std::string dir;
  int epochs = 3;
  int64_t batch = 128;
  CLI::App app{"Measure the loader's throughput (augmented images per second per core)"};
  app.add_option("--data", dir,
                 "dataset folder (default: synthetic CIFAR-10 in a temporary folder)");
  app.add_option("--epochs", epochs, "epochs to time")
      ->check(tools::positive())
      ->capture_default_str();
  app.add_option("--batch", batch, "batch size")->check(tools::positive())->capture_default_str();
  tools::one_line_errors(app, "psgd-bench-loader");
  CLI11_PARSE(app, argc, argv);
  return tools::run_tool("psgd-bench-loader", [&] {
    if (dir.empty()) {
      dir = "/tmp/psgd_bench_loader";
      write_synthetic(dir, DatasetFormat::Cifar10, 50000, 100, 0);
    }
    const Dataset d = load_dataset(dir, Split::Train);
    Loader loader(d, {.batch_size = batch, .seed = 1});
    int64_t images = 0;
    const auto start = std::chrono::steady_clock::now();
    for (int e = 0; e < epochs; ++e) {
      loader.start_epoch(e);
      Tensor x, y;
      while (loader.next(x, y)) images += x.shape[0];
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("%s: %lld augmented images in %.2f s: %.0f images/s on one loader thread\n",
                d.name.c_str(), static_cast<long long>(images), seconds, images / seconds);
    return 0;
  });
}
