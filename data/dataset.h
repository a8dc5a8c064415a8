// Image classification datasets in the CIFAR binary formats, held whole in memory as uint8
// (N, 3, 32, 32) with int32 labels. Files are untrusted input: every size and label is checked
// and a problem is one clear error naming the file.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace psgd::data {

inline constexpr int kSide = 32;
inline constexpr int kChannels = 3;
inline constexpr int64_t kImageBytes = int64_t{kChannels} * kSide * kSide;  // 3072

struct Normalization {
  std::array<float, kChannels> mean;  // of pixels scaled to [0, 1]
  std::array<float, kChannels> std;
};

// The reference's constants: mean (129.3, 124.1, 112.4) / 255, std (68.2, 65.4, 70.4) / 255.
Normalization reference_normalization();

enum class DatasetFormat { Auto, Cifar100, Cifar10 };
enum class Split { Train, Test };

const char* format_name(DatasetFormat format);
DatasetFormat parse_format(const std::string& name);  // "auto", "cifar100", "cifar10"

struct DatasetOptions {
  DatasetFormat format = DatasetFormat::Auto;
  bool coarse_labels = false;  // CIFAR-100: train on the 20 superclasses
};

struct Dataset {
  std::string name;              // "cifar100", "cifar10", or an imported set's name
  DatasetFormat format = DatasetFormat::Cifar10;
  int classes = 0;
  std::vector<uint8_t> images;   // (N, 3, 32, 32)
  std::vector<int32_t> labels;   // (N): the labels used (fine, or coarse when asked)
  std::vector<int32_t> coarse;   // (N): CIFAR-100's coarse labels, empty otherwise
  std::vector<std::string> class_names;
  Normalization norm;

  int64_t size() const { return static_cast<int64_t>(labels.size()); }
  const uint8_t* image(int64_t i) const { return images.data() + i * kImageBytes; }
};

// Finds the split's files under `dir`: a dataset.json written by psgd-data, the standard
// archive folders (cifar-100-binary/, cifar-10-batches-bin/), or the files directly in `dir`.
Dataset load_dataset(const std::string& dir, Split split, const DatasetOptions& options = {});

// Parses CIFAR records already in memory (one file's bytes); `origin` names them in errors.
void append_records(Dataset& dataset, const std::vector<uint8_t>& bytes, const std::string& origin,
                    bool coarse_labels);

}  // namespace psgd::data
