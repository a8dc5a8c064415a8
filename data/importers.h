// Importers into psgd's dataset layout: CIFAR-10 records (a label byte, then 3072 pixel bytes,
// planar RGB 32x32) in train.bin and test.bin, with a dataset.json naming the set, its classes
// and the per-channel mean and std of its training images (the normalisation it trains with).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/dataset.h"

namespace psgd::data {

struct ImageSet {
  std::vector<uint8_t> images;  // (N, 3, 32, 32)
  std::vector<int32_t> labels;
  int64_t size() const { return static_cast<int64_t>(labels.size()); }
};

struct ImportSummary {
  int64_t train = 0, test = 0;
  int classes = 0;
};

// Writes train.bin, test.bin and dataset.json into `dir` (created if needed).
ImportSummary write_imported(const std::string& dir, const std::string& name,
                             const std::vector<std::string>& class_names, const ImageSet& train,
                             const ImageSet& test);

// ---- MNIST-style IDX files -------------------------------------------------------------------
struct IdxSources {
  std::string train_images, train_labels, test_images, test_labels;
};
// The four standard names (train-images-idx3-ubyte, ...; gzipped or not) inside `dir`.
IdxSources find_idx_sources(const std::string& dir);
// 28x28 gray images become 32x32 RGB: zero padding of 2 on each side, the gray value in all
// three channels. With no class names given, classes are named by number.
ImportSummary import_idx(const IdxSources& sources, const std::string& out_dir,
                         const std::string& name, std::vector<std::string> class_names);

// ---- A folder of class folders of images (PNG, JPEG, BMP, ... through stb_image) --------------
enum class FitMode { Resize, CentreCrop };
// Class names are the sub-folder names, in sorted order. Each image goes to the test split with
// probability `test_fraction`, decided by the seed (the same files give the same split).
ImportSummary import_folder(const std::string& src_dir, const std::string& out_dir,
                            double test_fraction, FitMode fit, uint64_t seed);

// ---- Synthetic data with learnable structure --------------------------------------------------
// Writes a CIFAR-10 (cifar-10-batches-bin/) or CIFAR-100 (cifar-100-binary/) file set under
// `dir`: each class has its own colour and stripe pattern, plus noise and a random shift.
void write_synthetic(const std::string& dir, DatasetFormat format, int64_t train, int64_t test,
                     uint64_t seed);

}  // namespace psgd::data
