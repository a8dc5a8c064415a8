#include "data/dataset.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/check.h"

namespace psgd::data {
namespace fs = std::filesystem;
namespace {

constexpr int kCifar100Classes = 100, kCifar100Coarse = 20, kCifar10Classes = 10;

int64_t record_bytes(DatasetFormat format) {
  return (format == DatasetFormat::Cifar100 ? 2 : 1) + kImageBytes;
}

std::vector<uint8_t> read_file(const fs::path& path) {
  PSGD_CHECK(!fs::is_directory(path), path.string(), ": a folder, not a data file");
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  PSGD_CHECK(in.good(), path.string(), ": cannot open");
  const std::streamsize size = in.tellg();
  std::vector<uint8_t> bytes(static_cast<size_t>(std::max<std::streamsize>(size, 0)));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(bytes.data()), size);
  PSGD_CHECK(in.good() || size == 0, path.string(), ": cannot read");
  return bytes;
}

struct Layout {
  DatasetFormat format;
  std::vector<fs::path> train, test;
};

// The standard file names of each format, in `base`.
Layout standard_layout(DatasetFormat format, const fs::path& base) {
  if (format == DatasetFormat::Cifar100) return {format, {base / "train.bin"}, {base / "test.bin"}};
  Layout l{format, {}, {base / "test_batch.bin"}};
  for (int i = 1; i <= 5; ++i) l.train.push_back(base / ("data_batch_" + std::to_string(i) + ".bin"));
  return l;
}

bool complete(const Layout& l) {
  for (const auto& files : {l.train, l.test})
    for (const fs::path& f : files)
      if (!fs::exists(f)) return false;
  return true;
}

void apply_manifest(Dataset& d, Layout& layout, const fs::path& manifest) {
  PSGD_CHECK(!fs::is_directory(manifest), manifest.string(), ": a folder, not a dataset description");
  nlohmann::json j;
  try {
    std::ifstream in(manifest);
    j = nlohmann::json::parse(in);
    d.name = j.at("name").get<std::string>();
    layout.format = parse_format(j.at("format").get<std::string>());
    d.classes = j.at("classes").get<int>();
    for (const auto& f : j.at("train")) layout.train.push_back(manifest.parent_path() / f.get<std::string>());
    for (const auto& f : j.at("test")) layout.test.push_back(manifest.parent_path() / f.get<std::string>());
    if (j.contains("class_names")) d.class_names = j["class_names"].get<std::vector<std::string>>();
    if (j.contains("mean")) d.norm.mean = j["mean"].get<std::array<float, kChannels>>();
    if (j.contains("std")) d.norm.std = j["std"].get<std::array<float, kChannels>>();
  } catch (const nlohmann::json::exception& e) {
    PSGD_FAIL(manifest.string(), ": invalid dataset description (", e.what(), ")");
  }
  PSGD_CHECK(layout.format != DatasetFormat::Auto, manifest.string(), ": format must be cifar10 or cifar100");
  PSGD_CHECK(d.classes >= 1 && d.classes <= 256, manifest.string(), ": classes must be 1..256, got ", d.classes);
  for (int c = 0; c < kChannels; ++c)
    PSGD_CHECK(std::isfinite(d.norm.mean[c]) && std::isfinite(d.norm.std[c]) && d.norm.std[c] > 0.0f,
               manifest.string(), ": channel ", c, "'s mean ", d.norm.mean[c], " and std ", d.norm.std[c],
               " must be finite, the std positive");
}

}  // namespace

// The reference divides Python's doubles, [x / 255 for x in ...], and torchvision rounds the
// quotients to float32 (dividing in float32 lands one ulp off for four of the six).
Normalization reference_normalization() {
  const auto f = [](double value) { return static_cast<float>(value / 255); };
  return {{f(129.3), f(124.1), f(112.4)}, {f(68.2), f(65.4), f(70.4)}};
}

const char* format_name(DatasetFormat format) {
  switch (format) {
    case DatasetFormat::Cifar100: return "cifar100";
    case DatasetFormat::Cifar10: return "cifar10";
    case DatasetFormat::Auto: break;
  }
  return "auto";
}

DatasetFormat parse_format(const std::string& name) {
  if (name == "cifar100") return DatasetFormat::Cifar100;
  if (name == "cifar10") return DatasetFormat::Cifar10;
  PSGD_CHECK(name == "auto", "unknown dataset format '", name, "'; use cifar100, cifar10 or auto");
  return DatasetFormat::Auto;
}

void append_records(Dataset& d, const std::vector<uint8_t>& bytes, const std::string& origin,
                    bool coarse_labels) {
  const int64_t record = record_bytes(d.format);
  PSGD_CHECK(!bytes.empty(), origin, ": empty file");
  PSGD_CHECK(static_cast<int64_t>(bytes.size()) % record == 0, origin, ": ", bytes.size(),
             " bytes is not a whole number of ", format_name(d.format), " records (", record,
             " bytes each): truncated, or another format");
  const int64_t count = static_cast<int64_t>(bytes.size()) / record;
  const int64_t first = d.size();
  d.images.resize(static_cast<size_t>((first + count) * kImageBytes));
  for (int64_t i = 0; i < count; ++i) {
    const uint8_t* r = bytes.data() + i * record;
    int label = r[0];
    if (d.format == DatasetFormat::Cifar100) {
      PSGD_CHECK(r[0] < kCifar100Coarse, origin, ": record ", i, ": coarse label ", int{r[0]},
                 " outside 0..", kCifar100Coarse - 1);
      d.coarse.push_back(r[0]);
      label = coarse_labels ? r[0] : r[1];
    }
    const int limit = coarse_labels ? kCifar100Coarse : d.classes;
    PSGD_CHECK(label < limit, origin, ": record ", i, ": label ", label, " outside 0..", limit - 1);
    d.labels.push_back(label);
    std::copy(r + record - kImageBytes, r + record, d.images.begin() + (first + i) * kImageBytes);
  }
}

Dataset load_dataset(const std::string& dir, Split split, const DatasetOptions& options) {
  const fs::path root(dir);
  PSGD_CHECK(fs::is_directory(root), dir, ": no such dataset directory");
  Dataset d;
  d.norm = reference_normalization();
  Layout layout{DatasetFormat::Auto, {}, {}};
  if (fs::exists(root / "dataset.json")) {
    apply_manifest(d, layout, root / "dataset.json");
  } else {
    std::vector<Layout> candidates;
    for (DatasetFormat f : {DatasetFormat::Cifar100, DatasetFormat::Cifar10}) {
      if (options.format != DatasetFormat::Auto && options.format != f) continue;
      candidates.push_back(standard_layout(f, root / (f == DatasetFormat::Cifar100 ? "cifar-100-binary" : "cifar-10-batches-bin")));
      candidates.push_back(standard_layout(f, root));
    }
    for (const Layout& l : candidates)
      if (complete(l)) {
        layout = l;
        break;
      }
    if (layout.format == DatasetFormat::Auto) {
      // Name a file of the layout the folder holds most of (a CIFAR-10 folder short of one
      // batch is not "missing cifar-100-binary/train.bin").
      const auto present = [](const Layout& l) {
        int64_t n = 0;
        for (const auto& files : {l.train, l.test})
          n += std::count_if(files.begin(), files.end(), [](const fs::path& f) { return fs::exists(f); });
        return n;
      };
      const Layout& wanted = *std::max_element(candidates.begin(), candidates.end(),
                                               [&](const Layout& a, const Layout& b) { return present(a) < present(b); });
      for (const auto& files : {wanted.train, wanted.test})
        for (const fs::path& f : files)
          PSGD_CHECK(fs::exists(f), dir, ": no ", options.format == DatasetFormat::Auto ? "CIFAR" : format_name(options.format),
                     " dataset found (missing ", f.string(), ")");
    }
    d.name = format_name(layout.format);
    d.classes = layout.format == DatasetFormat::Cifar100 ? kCifar100Classes : kCifar10Classes;
  }
  PSGD_CHECK(options.format == DatasetFormat::Auto || options.format == layout.format, dir,
             ": holds ", format_name(layout.format), " data, not ", format_name(options.format));
  PSGD_CHECK(!options.coarse_labels || layout.format == DatasetFormat::Cifar100,
             dir, ": coarse labels exist only in CIFAR-100");
  d.format = layout.format;
  for (const fs::path& f : split == Split::Train ? layout.train : layout.test) {
    PSGD_CHECK(fs::exists(f), f.string(), ": missing file");
    PSGD_CHECK(split == Split::Train || !fs::is_regular_file(f) || fs::file_size(f) > 0, f.string(),
               ": no test images (imported with --test-fraction 0?); psgd-train can evaluate on "
               "held-out training images instead (--holdout N)");
    append_records(d, read_file(f), f.string(), options.coarse_labels);
  }
  if (options.coarse_labels) d.classes = kCifar100Coarse;
  if (d.class_names.size() != static_cast<size_t>(d.classes)) {
    d.class_names.clear();
    for (int c = 0; c < d.classes; ++c) d.class_names.push_back(std::to_string(c));
  }
  return d;
}

}  // namespace psgd::data
