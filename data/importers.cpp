#include "data/importers.h"

#include <stb_image.h>
#include <stb_image_resize.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "data/idx.h"
#include "engine/check.h"
#include "engine/safetensors.h"
#include "kernels/rng.h"

namespace psgd::data {
namespace fs = std::filesystem;
namespace {

constexpr int kIdxSide = 28;
constexpr int kIdxPad = (kSide - kIdxSide) / 2;

void write_bytes(const fs::path& path, const std::vector<uint8_t>& bytes) {
  write_file_atomic(path.string(), std::vector<std::byte>(reinterpret_cast<const std::byte*>(bytes.data()),
                                                          reinterpret_cast<const std::byte*>(bytes.data() + bytes.size())));
}

std::vector<uint8_t> cifar10_records(const ImageSet& set) {
  std::vector<uint8_t> out;
  out.reserve(static_cast<size_t>(set.size() * (1 + kImageBytes)));
  for (int64_t i = 0; i < set.size(); ++i) {
    out.push_back(static_cast<uint8_t>(set.labels[i]));
    out.insert(out.end(), set.images.begin() + i * kImageBytes, set.images.begin() + (i + 1) * kImageBytes);
  }
  return out;
}

Normalization channel_statistics(const ImageSet& set) {
  Normalization n{};
  const int64_t pixels = set.size() * kSide * kSide;
  for (int c = 0; c < kChannels; ++c) {
    double sum = 0, squares = 0;
    for (int64_t i = 0; i < set.size(); ++i) {
      const uint8_t* plane = set.images.data() + i * kImageBytes + c * kSide * kSide;
      for (int p = 0; p < kSide * kSide; ++p) {
        const double v = plane[p] / 255.0;
        sum += v;
        squares += v * v;
      }
    }
    const double mean = sum / pixels;
    n.mean[c] = static_cast<float>(mean);
    n.std[c] = static_cast<float>(std::sqrt(std::max(squares / pixels - mean * mean, 1e-12)));
  }
  return n;
}

std::string existing(const fs::path& dir, const std::string& stem) {
  for (const std::string& name : {stem, stem + ".gz"})
    if (fs::exists(dir / name)) return (dir / name).string();
  PSGD_FAIL(dir.string(), ": no ", stem, " (or ", stem, ".gz)");
}

ImageSet idx_images(const std::string& images_path, const std::string& labels_path) {
  const IdxArray images = read_idx(images_path), labels = read_idx(labels_path);
  PSGD_CHECK(images.dims.size() == 3 && images.dims[1] == kIdxSide && images.dims[2] == kIdxSide,
             images_path, ": expected (N, 28, 28) images");
  PSGD_CHECK(labels.dims.size() == 1 && labels.dims[0] == images.dims[0], labels_path, ": ",
             labels.dims.empty() ? 0 : labels.dims[0], " labels for ", images.dims[0], " images");
  ImageSet set;
  set.images.assign(static_cast<size_t>(images.dims[0] * kImageBytes), 0);
  for (int64_t i = 0; i < images.dims[0]; ++i) {
    set.labels.push_back(labels.values[i]);
    for (int c = 0; c < kChannels; ++c)
      for (int y = 0; y < kIdxSide; ++y)
        std::copy_n(images.values.begin() + (i * kIdxSide + y) * kIdxSide, kIdxSide,
                    set.images.begin() + i * kImageBytes + c * kSide * kSide +
                        (y + kIdxPad) * kSide + kIdxPad);
  }
  return set;
}

// An image file as (3, 32, 32): resized whole, or its centre square resized.
void load_image(const fs::path& path, FitMode fit, uint8_t* out) {
  int w = 0, h = 0, channels = 0;
  uint8_t* pixels = stbi_load(path.string().c_str(), &w, &h, &channels, kChannels);
  PSGD_CHECK(pixels != nullptr, path.string(), ": cannot read image (", stbi_failure_reason(), ")");
  const int side = std::min(w, h);
  const int x0 = fit == FitMode::CentreCrop ? (w - side) / 2 : 0;
  const int y0 = fit == FitMode::CentreCrop ? (h - side) / 2 : 0;
  const int cw = fit == FitMode::CentreCrop ? side : w, ch = fit == FitMode::CentreCrop ? side : h;
  uint8_t hwc[kSide * kSide * kChannels];
  const int ok = stbir_resize_uint8(pixels + (y0 * w + x0) * kChannels, cw, ch, w * kChannels,
                                    hwc, kSide, kSide, 0, kChannels);
  stbi_image_free(pixels);
  PSGD_CHECK(ok, path.string(), ": cannot resize");
  for (int c = 0; c < kChannels; ++c)
    for (int p = 0; p < kSide * kSide; ++p) out[c * kSide * kSide + p] = hwc[p * kChannels + c];
}

}  // namespace

ImportSummary write_imported(const std::string& dir, const std::string& name,
                             const std::vector<std::string>& class_names, const ImageSet& train,
                             const ImageSet& test) {
  PSGD_CHECK(train.size() > 0, name, ": no training images");
  PSGD_CHECK(!class_names.empty() && class_names.size() <= 256, name, ": ", class_names.size(),
             " classes (1..256 fit the format)");
  for (const ImageSet* s : {&train, &test})
    for (int32_t label : s->labels)
      PSGD_CHECK(label >= 0 && label < static_cast<int32_t>(class_names.size()), name, ": label ",
                 label, " outside 0..", class_names.size() - 1);
  fs::create_directories(dir);
  write_bytes(fs::path(dir) / "train.bin", cifar10_records(train));
  write_bytes(fs::path(dir) / "test.bin", cifar10_records(test));
  const Normalization norm = channel_statistics(train);
  const nlohmann::json manifest = {{"name", name},       {"format", "cifar10"},
                                   {"classes", class_names.size()},
                                   {"class_names", class_names},
                                   {"train", {"train.bin"}}, {"test", {"test.bin"}},
                                   {"mean", norm.mean},   {"std", norm.std}};
  const std::string text = manifest.dump(2) + "\n";
  write_bytes(fs::path(dir) / "dataset.json", std::vector<uint8_t>(text.begin(), text.end()));
  return {train.size(), test.size(), static_cast<int>(class_names.size())};
}

IdxSources find_idx_sources(const std::string& dir) {
  const fs::path d(dir);
  return {existing(d, "train-images-idx3-ubyte"), existing(d, "train-labels-idx1-ubyte"),
          existing(d, "t10k-images-idx3-ubyte"), existing(d, "t10k-labels-idx1-ubyte")};
}

ImportSummary import_idx(const IdxSources& s, const std::string& out_dir, const std::string& name,
                         std::vector<std::string> class_names) {
  const ImageSet train = idx_images(s.train_images, s.train_labels);
  const ImageSet test = idx_images(s.test_images, s.test_labels);
  if (class_names.empty()) {
    const int32_t top = *std::max_element(train.labels.begin(), train.labels.end());
    for (int32_t c = 0; c <= top; ++c) class_names.push_back(std::to_string(c));
  }
  return write_imported(out_dir, name, class_names, train, test);
}

ImportSummary import_folder(const std::string& src_dir, const std::string& out_dir,
                            double test_fraction, FitMode fit, uint64_t seed) {
  PSGD_CHECK(fs::is_directory(src_dir), src_dir, ": no such folder");
  PSGD_CHECK(test_fraction >= 0.0 && test_fraction < 1.0, "the test fraction must be in [0, 1)");
  std::vector<fs::path> classes;
  for (const auto& e : fs::directory_iterator(src_dir))
    if (e.is_directory()) classes.push_back(e.path());
  std::sort(classes.begin(), classes.end());
  PSGD_CHECK(!classes.empty(), src_dir, ": no class folders inside");
  ImageSet train, test;
  std::vector<std::string> names;
  for (size_t c = 0; c < classes.size(); ++c) {
    names.push_back(classes[c].filename().string());
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(classes[c]))
      if (e.is_regular_file()) files.push_back(e.path());
    std::sort(files.begin(), files.end());
    const uint64_t key = rng::stream_key(seed, c);
    for (size_t f = 0; f < files.size(); ++f) {
      ImageSet& to = rng::uniform(key, f) < test_fraction ? test : train;
      to.images.resize(to.images.size() + kImageBytes);
      load_image(files[f], fit, to.images.data() + to.images.size() - kImageBytes);
      to.labels.push_back(static_cast<int32_t>(c));
    }
  }
  return write_imported(out_dir, fs::path(src_dir).filename().string(), names, train, test);
}

void write_synthetic(const std::string& dir, DatasetFormat format, int64_t train, int64_t test,
                     uint64_t seed) {
  PSGD_CHECK(format != DatasetFormat::Auto, "synthetic data needs cifar10 or cifar100");
  PSGD_CHECK(train >= 1 && test >= 1, "synthetic data needs at least one image per split");
  const bool hundred = format == DatasetFormat::Cifar100;
  const int classes = hundred ? 100 : 10;
  const int64_t record = (hundred ? 2 : 1) + kImageBytes;
  const auto sample = [&](int64_t index, uint8_t* r) {
    const uint64_t key = rng::stream_key(seed, static_cast<uint64_t>(index));
    const int label = static_cast<int>(rng::bits64(key, 0) % classes);
    if (hundred) *r++ = static_cast<uint8_t>(label / 5);  // 20 coarse classes of 5
    *r++ = static_cast<uint8_t>(label);
    const uint64_t class_key = rng::stream_key(seed ^ 0xC1A55u, static_cast<uint64_t>(label));
    const double angle = 3.14159265 * rng::uniform(class_key, 0);
    const double frequency = 0.2 + 0.6 * rng::uniform(class_key, 1);
    const int shift = static_cast<int>(rng::bits64(key, 1) % 8);
    for (int c = 0; c < kChannels; ++c) {
      const double colour = 40 + 150 * rng::uniform(class_key, 2 + c);
      for (int y = 0; y < kSide; ++y)
        for (int x = 0; x < kSide; ++x) {
          const double t = (x + shift) * std::cos(angle) + (y + shift) * std::sin(angle);
          const double noise = 40 * (rng::uniform(key, 8 + (c * kSide + y) * kSide + x) - 0.5);
          const double v = colour + 50 * std::sin(frequency * t) + noise;
          *r++ = static_cast<uint8_t>(std::clamp(v, 0.0, 255.0));
        }
    }
  };
  const auto write_split = [&](const fs::path& path, int64_t first, int64_t count) {
    std::vector<uint8_t> bytes(static_cast<size_t>(count * record));
    for (int64_t i = 0; i < count; ++i) sample(first + i, bytes.data() + i * record);
    write_bytes(path, bytes);
  };
  const fs::path base = fs::path(dir) / (hundred ? "cifar-100-binary" : "cifar-10-batches-bin");
  fs::create_directories(base);
  if (hundred) {
    write_split(base / "train.bin", 0, train);
    write_split(base / "test.bin", train, test);
    return;
  }
  for (int b = 0; b < 5; ++b)  // the five training batches of the real archive
    write_split(base / ("data_batch_" + std::to_string(b + 1) + ".bin"), train * b / 5,
                train * (b + 1) / 5 - train * b / 5);
  write_split(base / "test_batch.bin", train, test);
}

}  // namespace psgd::data
