// psgd-data: prepares datasets for psgd. Imports MNIST-style IDX files and folders of images
// into the CIFAR record layout, writes synthetic CIFAR data, and inspects a dataset (counts per
// class and a PNG grid of samples, raw and augmented).
#include <stb_image_write.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <map>

#include "data/augment.h"
#include "data/dataset.h"
#include "data/importers.h"
#include "engine/check.h"
#include "engine/safetensors.h"
#include "tools/cli_support.h"

using namespace psgd;
using namespace psgd::data;

namespace {

void print_summary(const std::string& out, const ImportSummary& s) {
  std::printf("psgd-data: %lld training and %lld test images, %d classes -> %s\n",
              static_cast<long long>(s.train), static_cast<long long>(s.test), s.classes,
              out.c_str());
  if (s.test == 0)
    std::printf("note: no test images; psgd-train evaluates such a dataset on held-out training "
                "images (--holdout N)\n");
}

// A grid of `count` samples: the first rows as stored, the next as the training transform
// gives them (denormalised back to bytes), `columns` to a row.
void write_grid(const Dataset& d, int count, uint64_t seed, const std::string& path) {
  constexpr int kColumns = 8, kGap = 2;
  count = static_cast<int>(std::min<int64_t>(count, d.size()));
  const int rows = (count + kColumns - 1) / kColumns;
  const int cell = kSide + kGap, width = kColumns * cell, height = 2 * rows * cell + kGap;
  std::vector<uint8_t> rgb(static_cast<size_t>(width * height * kChannels), 255);
  std::vector<float> augmented(kImageBytes);
  const auto put = [&](int block, int i, const auto& pixel) {
    const int x0 = (i % kColumns) * cell, y0 = (block * rows + i / kColumns) * cell + block * kGap;
    for (int c = 0; c < kChannels; ++c)
      for (int y = 0; y < kSide; ++y)
        for (int x = 0; x < kSide; ++x)
          rgb[((y0 + y) * width + x0 + x) * kChannels + c] = pixel(c, y, x);
  };
  for (int i = 0; i < count; ++i) {
    const uint8_t* raw = d.image(i);
    put(0, i, [&](int c, int y, int x) { return raw[(c * kSide + y) * kSide + x]; });
    const SampleDraws draws = draw_sample(seed, 0, static_cast<uint64_t>(i));
    transform_image(raw, augmented.data(), &draws, d.norm);
    put(1, i, [&](int c, int y, int x) {
      const float v = (augmented[(c * kSide + y) * kSide + x] * d.norm.std[c] + d.norm.mean[c]) * 255.0f;
      return static_cast<uint8_t>(std::clamp(v + 0.5f, 0.0f, 255.0f));
    });
  }
  // Encoded in memory and written by psgd: stbi_write_png ignores fwrite's errors (a full disk).
  std::vector<std::byte> png;
  const auto append = [](void* to, void* data, int size) {
    auto& out = *static_cast<std::vector<std::byte>*>(to);
    const auto* bytes = static_cast<const std::byte*>(data);
    out.insert(out.end(), bytes, bytes + size);
  };
  PSGD_CHECK(stbi_write_png_to_func(append, &png, width, height, kChannels, rgb.data(), width * kChannels),
             path, ": cannot encode the PNG");
  write_file_atomic(path, png);
}

void inspect(const std::string& dir, bool test_split, int samples, uint64_t seed,
             const std::string& grid) {
  const Dataset d = load_dataset(dir, test_split ? Split::Test : Split::Train);
  std::map<int32_t, int64_t> counts;
  for (int32_t label : d.labels) ++counts[label];
  std::printf("%s (%s split): %lld images, %d classes, format %s\n", d.name.c_str(),
              test_split ? "test" : "train", static_cast<long long>(d.size()), d.classes,
              format_name(d.format));
  std::printf("normalisation: mean (%.4f, %.4f, %.4f), std (%.4f, %.4f, %.4f)\n", d.norm.mean[0],
              d.norm.mean[1], d.norm.mean[2], d.norm.std[0], d.norm.std[1], d.norm.std[2]);
  for (int c = 0; c < d.classes; ++c)
    std::printf("  %3d %-20s %8lld\n", c, d.class_names[c].c_str(),
                static_cast<long long>(counts[c]));
  if (!grid.empty()) {
    write_grid(d, samples, seed, grid);
    std::printf("grid of %d samples (top: stored, bottom: augmented) -> %s\n", samples, grid.c_str());
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Prepare datasets for psgd: import, synthesise, inspect"};
  app.require_subcommand(1);

  std::string idx_dir, out, name = "mnist", names;
  IdxSources idx;
  auto* import_idx_cmd = app.add_subcommand("import-idx", "MNIST/Fashion-MNIST IDX files (gzipped or not) into the CIFAR layout");
  import_idx_cmd->add_option("--from", idx_dir, "folder holding the four standard IDX files");
  import_idx_cmd->add_option("--train-images", idx.train_images, "training images (instead of --from)");
  import_idx_cmd->add_option("--train-labels", idx.train_labels, "training labels");
  import_idx_cmd->add_option("--test-images", idx.test_images, "test images");
  import_idx_cmd->add_option("--test-labels", idx.test_labels, "test labels");
  import_idx_cmd->add_option("--name", name, "dataset name")->capture_default_str();
  import_idx_cmd->add_option("--class-names", names, "comma-separated class names");
  import_idx_cmd->add_option("--out", out, "output folder")->required();

  std::string src;
  double test_fraction = 0.2;
  std::string fit = "crop";
  uint64_t seed = 0;
  auto* import_folder_cmd = app.add_subcommand("import-folder", "a folder of class folders of images into the CIFAR layout");
  import_folder_cmd->add_option("src", src, "folder of class folders")->required();
  import_folder_cmd->add_option("--out", out, "output folder")->required();
  import_folder_cmd->add_option("--test-fraction", test_fraction, "share of images for the test split")->check(tools::in_range(0.0, 0.99))->capture_default_str();
  import_folder_cmd->add_option("--fit", fit, "crop: centre square then resize; resize: whole image")->check(CLI::IsMember({"crop", "resize"}))->capture_default_str();
  import_folder_cmd->add_option("--seed", seed, "seed of the train/test split")->capture_default_str();

  std::string format = "cifar10";
  int64_t train = 2000, test = 500;
  auto* synth_cmd = app.add_subcommand("synth", "a small CIFAR-format dataset with learnable structure");
  synth_cmd->add_option("--out", out, "output folder")->required();
  synth_cmd->add_option("--format", format, "cifar10 or cifar100")->check(CLI::IsMember({"cifar10", "cifar100"}))->capture_default_str();
  synth_cmd->add_option("--train", train, "training images")->check(tools::positive())->capture_default_str();
  synth_cmd->add_option("--test", test, "test images")->check(tools::positive())->capture_default_str();
  synth_cmd->add_option("--seed", seed, "seed")->capture_default_str();

  std::string dir, grid;
  bool test_split = false;
  int samples = 32;
  auto* inspect_cmd = app.add_subcommand("inspect", "counts per class and a PNG grid of samples");
  inspect_cmd->add_option("dir", dir, "dataset folder")->required();
  inspect_cmd->add_flag("--test", test_split, "inspect the test split");
  inspect_cmd->add_option("--grid", grid, "write a PNG grid of samples, raw and augmented");
  inspect_cmd->add_option("--samples", samples, "samples in the grid")->check(tools::in_range(1, 512))->capture_default_str();
  inspect_cmd->add_option("--seed", seed, "augmentation seed of the grid")->capture_default_str();

  tools::one_line_errors(app, "psgd-data");
  CLI11_PARSE(app, argc, argv);
  return tools::run_tool("psgd-data", [&] {
    if (import_idx_cmd->parsed()) {
      if (!idx_dir.empty()) idx = find_idx_sources(idx_dir);
      PSGD_CHECK(!idx.train_images.empty() && !idx.train_labels.empty() &&
                     !idx.test_images.empty() && !idx.test_labels.empty(),
                 "give --from DIR or all four of --train-images, --train-labels, --test-images, --test-labels");
      std::vector<std::string> class_names;
      for (size_t at = 0; !names.empty() && at <= names.size();) {
        const size_t comma = std::min(names.find(',', at), names.size());
        class_names.push_back(names.substr(at, comma - at));
        at = comma + 1;
      }
      print_summary(out, import_idx(idx, out, name, class_names));
    } else if (import_folder_cmd->parsed()) {
      print_summary(out, import_folder(src, out, test_fraction,
                                       fit == "crop" ? FitMode::CentreCrop : FitMode::Resize, seed));
    } else if (synth_cmd->parsed()) {
      write_synthetic(out, parse_format(format), train, test, seed);
      std::printf("psgd-data: synthetic %s, %lld training and %lld test images -> %s\n",
                  format.c_str(), static_cast<long long>(train), static_cast<long long>(test), out.c_str());
    } else {
      inspect(dir, test_split, samples, seed, grid);
    }
    return 0;
  });
}
