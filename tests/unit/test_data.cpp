// Datasets: readers, importers, augmentation, the loader and its sharding.
#include <doctest/doctest.h>
#include <stb_image_write.h>
#include <zlib.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>

#include "data/augment.h"
#include "data/dataset.h"
#include "data/idx.h"
#include "data/importers.h"
#include "data/loader.h"

using namespace psgd;
using namespace psgd::data;
namespace fs = std::filesystem;

namespace {

fs::path fresh_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("psgd_test_data_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

void write_raw(const fs::path& path, const std::vector<uint8_t>& bytes) {
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

std::vector<uint8_t> cifar100_record(uint8_t coarse, uint8_t fine) {
  std::vector<uint8_t> r(2 + kImageBytes, 7);
  r[0] = coarse;
  r[1] = fine;
  return r;
}

void check_error(const fs::path& dir, const char* expected, const DatasetOptions& o = {}) {
  CAPTURE(expected);
  CHECK_THROWS_WITH_AS(load_dataset(dir.string(), Split::Train, o), doctest::Contains(expected), Error);
}

}  // namespace

TEST_CASE("synthetic CIFAR-10 and CIFAR-100 sets read back through the standard layouts") {
  const fs::path dir = fresh_dir("synth");
  write_synthetic(dir.string(), DatasetFormat::Cifar10, 103, 21, 1);
  const Dataset train = load_dataset(dir.string(), Split::Train);
  CHECK(train.format == DatasetFormat::Cifar10);
  CHECK(train.size() == 103);
  CHECK(train.classes == 10);
  CHECK(load_dataset(dir.string(), Split::Test).size() == 21);
  for (int32_t l : train.labels) CHECK((l >= 0 && l < 10));

  const fs::path dir100 = fresh_dir("synth100");
  write_synthetic(dir100.string(), DatasetFormat::Cifar100, 50, 10, 2);
  const Dataset fine = load_dataset(dir100.string(), Split::Train, {DatasetFormat::Cifar100});
  CHECK(fine.classes == 100);
  const Dataset coarse = load_dataset(dir100.string(), Split::Train, {.coarse_labels = true});
  CHECK(coarse.classes == 20);
  for (int64_t i = 0; i < fine.size(); ++i) CHECK(coarse.labels[i] == fine.labels[i] / 5);
  CHECK(std::equal(fine.images.begin(), fine.images.end(), coarse.images.begin()));
  check_error(dir100, "no cifar10 dataset found", {DatasetFormat::Cifar10});
  check_error(dir, "coarse labels exist only in CIFAR-100", {.coarse_labels = true});
}

TEST_CASE("corrupt CIFAR files each give their own clear error") {
  const fs::path dir = fresh_dir("corrupt");
  check_error(dir, "no CIFAR dataset found (missing");
  std::vector<uint8_t> bytes;
  for (int i = 0; i < 3; ++i) {
    const std::vector<uint8_t> r = cifar100_record(3, static_cast<uint8_t>(17 + i));
    bytes.insert(bytes.end(), r.begin(), r.end());
  }
  write_raw(dir / "test.bin", bytes);
  write_raw(dir / "train.bin", {});
  check_error(dir, "train.bin: empty file");
  write_raw(dir / "train.bin", std::vector<uint8_t>(bytes.begin(), bytes.end() - 100));
  check_error(dir, "is not a whole number of cifar100 records");
  std::vector<uint8_t> bad = bytes;
  bad[2 * (2 + kImageBytes) + 1] = 200;  // record 2, fine label
  write_raw(dir / "train.bin", bad);
  check_error(dir, "record 2: label 200 outside 0..99");
  write_raw(dir / "train.bin", bytes);
  CHECK(load_dataset(dir.string(), Split::Train).labels == std::vector<int32_t>{17, 18, 19});
  CHECK_THROWS_WITH_AS(load_dataset((dir / "nothing").string(), Split::Train),
                       doctest::Contains("no such dataset directory"), Error);
  fs::remove(dir / "train.bin");
  fs::create_directory(dir / "train.bin");
  check_error(dir, "train.bin: a folder, not a data file");
  write_raw(dir / "test.bin", {});
  CHECK_THROWS_WITH_AS(load_dataset(dir.string(), Split::Test),
                       doctest::Contains("test.bin: no test images"), Error);
}

TEST_CASE("a CIFAR-10 folder short of a batch names the missing batch") {
  const fs::path dir = fresh_dir("short");
  write_synthetic(dir.string(), DatasetFormat::Cifar10, 50, 10, 1);
  fs::remove(dir / "cifar-10-batches-bin" / "data_batch_5.bin");
  check_error(dir, "cifar-10-batches-bin/data_batch_5.bin");
}

TEST_CASE("a dataset description's normalisation must be finite, its std positive") {
  const fs::path dir = fresh_dir("manifest");
  write_synthetic(dir.string(), DatasetFormat::Cifar10, 20, 10, 1);
  const auto describe = [&](const std::string& std) {
    std::ofstream(dir / "dataset.json")
        << R"({"name": "m", "format": "cifar10", "classes": 10,)"
        << R"( "train": ["cifar-10-batches-bin/data_batch_1.bin"],)"
        << R"( "test": ["cifar-10-batches-bin/test_batch.bin"], "std": )" << std << "}";
  };
  describe("[0.5, 0.5, 0.5]");
  CHECK(load_dataset(dir.string(), Split::Train).norm.std[2] == 0.5f);
  describe("[0.5, 0, 0.5]");
  check_error(dir, "channel 1's mean");
  describe("[0.5, 0.5, -1]");
  check_error(dir, "the std positive");
}

TEST_CASE("import-idx: gzipped and plain IDX round trip, padded to 32x32 RGB") {
  const fs::path dir = fresh_dir("idx");
  IdxArray images{{3, 28, 28}, std::vector<uint8_t>(3 * 28 * 28)};
  for (size_t i = 0; i < images.values.size(); ++i) images.values[i] = static_cast<uint8_t>(i * 7 + 1);
  const IdxArray labels{{3}, {2, 0, 1}};
  write_idx((dir / "train-images-idx3-ubyte").string(), images);
  write_idx((dir / "t10k-images-idx3-ubyte").string(), images);
  write_idx((dir / "t10k-labels-idx1-ubyte").string(), labels);
  {  // the training labels gzipped, as Debian ships them
    std::ifstream plain((dir / "t10k-labels-idx1-ubyte").string(), std::ios::binary);
    const std::string data((std::istreambuf_iterator<char>(plain)), {});
    gzFile gz = gzopen((dir / "train-labels-idx1-ubyte.gz").string().c_str(), "wb");
    gzwrite(gz, data.data(), static_cast<unsigned>(data.size()));
    gzclose(gz);
  }
  const IdxSources sources = find_idx_sources(dir.string());
  CHECK(sources.train_labels.ends_with(".gz"));
  const ImportSummary s = import_idx(sources, (dir / "out").string(), "tiny", {"a", "b", "c"});
  CHECK(s.train == 3);
  CHECK(s.classes == 3);
  const Dataset d = load_dataset((dir / "out").string(), Split::Train);
  CHECK(d.name == "tiny");
  CHECK(d.class_names == std::vector<std::string>{"a", "b", "c"});
  CHECK(d.labels == std::vector<int32_t>{2, 0, 1});
  for (int64_t i = 0; i < 3; ++i)
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < 32; ++y)
        for (int x = 0; x < 32; ++x) {
          const bool inside = y >= 2 && y < 30 && x >= 2 && x < 30;
          const uint8_t want = inside ? images.values[(i * 28 + y - 2) * 28 + x - 2] : 0;
          REQUIRE(d.image(i)[(c * 32 + y) * 32 + x] == want);
        }
  CHECK(d.norm.mean[0] > 0.0f);
  CHECK(d.norm.mean[0] == d.norm.mean[2]);

  write_raw(dir / "broken-idx", {0, 0, 8, 3, 0, 0, 0, 5});
  CHECK_THROWS_WITH_AS(read_idx((dir / "broken-idx").string()), doctest::Contains("truncated"),
                       Error);
}

TEST_CASE("import-folder: PNG, BMP and JPEG class folders, fitted to 32x32") {
  const fs::path dir = fresh_dir("folder");
  for (const char* cls : {"cats", "dogs"}) fs::create_directories(dir / "src" / cls);
  std::vector<uint8_t> red(40 * 30 * 3), blue(64 * 64 * 3);
  for (size_t i = 0; i < red.size(); i += 3) red[i] = 200;
  for (size_t i = 2; i < blue.size(); i += 3) blue[i] = 150;
  stbi_write_png((dir / "src/cats/a.png").string().c_str(), 40, 30, 3, red.data(), 40 * 3);
  stbi_write_bmp((dir / "src/cats/b.bmp").string().c_str(), 40, 30, 3, red.data());
  stbi_write_jpg((dir / "src/dogs/c.jpg").string().c_str(), 64, 64, 3, blue.data(), 95);
  const ImportSummary s = import_folder((dir / "src").string(), (dir / "out").string(), 0.0,
                                        FitMode::CentreCrop, 0);
  CHECK(s.train == 3);
  CHECK(s.classes == 2);
  const Dataset d = load_dataset((dir / "out").string(), Split::Train);
  CHECK(d.class_names == std::vector<std::string>{"cats", "dogs"});
  CHECK(d.labels == std::vector<int32_t>{0, 0, 1});
  CHECK(d.image(0)[0] == 200);           // red channel of a red image
  CHECK(d.image(0)[1024] == 0);          // its green channel
  CHECK(std::abs(d.image(2)[2048 + 500] - 150) <= 3);  // JPEG is lossy

  write_raw(dir / "src/dogs/d.png", {'n', 'o', 't'});
  CHECK_THROWS_WITH_AS(import_folder((dir / "src").string(), (dir / "out2").string(), 0.0,
                                     FitMode::Resize, 0),
                       doctest::Contains("d.png: cannot read image"), Error);
}

TEST_CASE("augmentation: reflect padding, flips and crops match a hand-built padded image") {
  std::vector<uint8_t> img(kImageBytes);
  for (int i = 0; i < kImageBytes; ++i) img[i] = static_cast<uint8_t>(i * 13 % 251);
  // The 40x40 padded image, built with PyTorch's 'reflect' rule written out.
  const auto padded = [&](int c, int r, int col) {
    const auto mirror = [](int i) { return i < 0 ? -i : (i > 31 ? 62 - i : i); };
    return img[(c * 32 + mirror(r - 4)) * 32 + mirror(col - 4)];
  };
  const Normalization unit{{0, 0, 0}, {1, 1, 1}};
  std::vector<float> out(kImageBytes);
  for (bool flip : {false, true})
    for (int dy : {0, 3, 4, 8})
      for (int dx : {0, 4, 7, 8}) {
        const SampleDraws d{flip, dy, dx};
        transform_image(img.data(), out.data(), &d, unit);
        for (int c = 0; c < 3; ++c)
          for (int y = 0; y < 32; ++y)
            for (int x = 0; x < 32; ++x) {
              const int col = flip ? 39 - (x + dx) : x + dx;  // flip the padded image, crop
              REQUIRE(out[(c * 32 + y) * 32 + x] * 255.0f ==
                      doctest::Approx(padded(c, y + dy, col)).epsilon(1e-6));
            }
      }
  const SampleDraws identity{};
  transform_image(img.data(), out.data(), &identity, reference_normalization());
  // The reference's constants: Python's double quotients, rounded to float32 by torchvision.
  const float mean = static_cast<float>(129.3 / 255), std = static_cast<float>(68.2 / 255);
  CHECK(out[0] == (img[0] / 255.0f - mean) / std);
}

TEST_CASE("augmentation draws: deterministic, varied, in range") {
  int flips = 0;
  std::set<int> offsets;
  for (uint64_t i = 0; i < 2000; ++i) {
    const SampleDraws a = draw_sample(7, 3, i), b = draw_sample(7, 3, i);
    CHECK((a.flip == b.flip && a.dy == b.dy && a.dx == b.dx));
    CHECK((a.dy >= 0 && a.dy <= 8 && a.dx >= 0 && a.dx <= 8));
    flips += a.flip;
    offsets.insert(a.dy * 9 + a.dx);
  }
  CHECK(flips > 900);
  CHECK(flips < 1100);
  CHECK(offsets.size() == 81);
  int changed = 0;  // another epoch draws again
  for (uint64_t i = 0; i < 200; ++i) {
    const SampleDraws a = draw_sample(7, 3, i), b = draw_sample(7, 4, i);
    changed += a.flip != b.flip || a.dy != b.dy || a.dx != b.dx;
  }
  CHECK(changed > 180);
}

TEST_CASE("sharding: each sample once per epoch, ranks disjoint, W ranks = one rank's batch") {
  const fs::path dir = fresh_dir("shard");
  write_synthetic(dir.string(), DatasetFormat::Cifar10, 203, 5, 3);
  const Dataset d = load_dataset(dir.string(), Split::Train);
  const std::vector<int64_t> order = epoch_order(d.size(), 9, 2, true);
  CHECK(order != epoch_order(d.size(), 9, 3, true));
  CHECK(order == epoch_order(d.size(), 9, 2, true));
  Loader single(d, {.batch_size = 32, .seed = 9});
  std::vector<std::unique_ptr<Loader>> ranks;
  for (int r = 0; r < 4; ++r)
    ranks.push_back(std::make_unique<Loader>(d, LoaderConfig{.batch_size = 32, .seed = 9, .rank = r, .world = 4}));
  CHECK(single.batches_per_epoch() == 7);
  std::multiset<int64_t> seen;
  for (int64_t b = 0; b < single.batches_per_epoch(); ++b) {
    std::vector<int64_t> joined;
    for (auto& rank : ranks) {
      const std::vector<int64_t> part = rank->shard(order, b);
      if (b < 6) CHECK(part.size() == 8);
      joined.insert(joined.end(), part.begin(), part.end());
    }
    CHECK(joined == single.shard(order, b));
    seen.insert(joined.begin(), joined.end());
  }
  CHECK(seen.size() == 203);
  CHECK(std::set<int64_t>(seen.begin(), seen.end()).size() == 203);
  CHECK_THROWS_WITH_AS(Loader(d, {.batch_size = 30, .world = 4}),
                       doctest::Contains("does not split evenly over 4 ranks"), Error);
  CHECK(Loader(d, {.batch_size = 32, .drop_last = true}).batches_per_epoch() == 6);
}

TEST_CASE("run samples: subsets picked at random, with or without a hold-out, and never too many") {
  const auto sorted_unique_below = [](const std::vector<int64_t>& v, int64_t n) {
    return std::is_sorted(v.begin(), v.end()) &&
           std::adjacent_find(v.begin(), v.end()) == v.end() && !v.empty() && v.front() >= 0 &&
           v.back() < n;
  };
  const RunSamples all = choose_samples(100, 40, {}, 3);
  CHECK(all.train.empty());
  CHECK(all.evaluation.empty());
  CHECK(choose_samples(100, 40, {.train_subset = 100, .test_subset = 40}, 3).train.empty());

  const RunSamples some = choose_samples(100, 40, {.train_subset = 30, .test_subset = 10}, 3);
  CHECK(some.train.size() == 30);
  CHECK(some.evaluation.size() == 10);
  CHECK(sorted_unique_below(some.train, 100));
  CHECK(sorted_unique_below(some.evaluation, 40));
  CHECK(some.train == hold_out(100, 70, 3).train);  // the images earlier runs picked

  // With a hold-out the subset is a random pick of the images left, not their first ones.
  const HeldOut split = hold_out(100, 20, 3);
  const RunSamples held = choose_samples(100, 0, {.holdout = 20, .train_subset = 30}, 3);
  CHECK(held.evaluation == split.validation);
  CHECK(held.train.size() == 30);
  CHECK(sorted_unique_below(held.train, 100));
  CHECK(
      std::includes(split.train.begin(), split.train.end(), held.train.begin(), held.train.end()));
  CHECK(held.train != std::vector<int64_t>(split.train.begin(), split.train.begin() + 30));
  CHECK(held.train == choose_samples(100, 0, {.holdout = 20, .train_subset = 30}, 3).train);
  CHECK(held.train != choose_samples(100, 0, {.holdout = 20, .train_subset = 30}, 4).train);
  CHECK(choose_samples(100, 0, {.holdout = 20}, 3).train == split.train);

  CHECK_THROWS_WITH_AS(
      choose_samples(100, 40, {.train_subset = 101}, 3),
      doctest::Contains("--train-subset 101: the training set holds only 100 images"), Error);
  CHECK_THROWS_WITH_AS(choose_samples(100, 40, {.test_subset = 41}, 3),
                       doctest::Contains("--test-subset 41: the test set holds only 40 images"),
                       Error);
  CHECK_THROWS_WITH_AS(
      choose_samples(100, 0, {.holdout = 20, .train_subset = 81}, 3),
      doctest::Contains("--train-subset 81: the training set less --holdout holds only 80 images"),
      Error);
  CHECK_THROWS_AS(choose_samples(100, 0, {.holdout = 100}, 3), Error);
}

TEST_CASE("loader: prefetched batches are the transformed samples, the same on every run") {
  const fs::path dir = fresh_dir("loader");
  write_synthetic(dir.string(), DatasetFormat::Cifar10, 70, 5, 4);
  const Dataset d = load_dataset(dir.string(), Split::Train);
  const HeldOut h = hold_out(d.size(), 10, 1);
  CHECK(h.train.size() == 60);
  std::set<int64_t> all(h.train.begin(), h.train.end());
  all.insert(h.validation.begin(), h.validation.end());
  CHECK(all.size() == 70);

  const LoaderConfig config{.batch_size = 16, .seed = 5, .prefetch = 2};
  const auto run_epoch = [&](int64_t epoch) {
    Loader loader(d, config, h.train);
    loader.start_epoch(epoch);
    std::vector<float> pixels;
    std::vector<int32_t> labels;
    Tensor x, y;
    int batches = 0;
    while (loader.next(x, y)) {
      pixels.insert(pixels.end(), x.f32(), x.f32() + x.numel());
      labels.insert(labels.end(), y.i32(), y.i32() + y.numel());
      ++batches;
    }
    CHECK(batches == 4);
    CHECK(labels.size() == 60);
    return std::make_pair(pixels, labels);
  };
  const auto first = run_epoch(1);
  CHECK(first == run_epoch(1));
  CHECK(first.first != run_epoch(2).first);

  // The first sample of epoch 1, by hand.
  const std::vector<int64_t> order = epoch_order(60, 5, 1, true);
  const int64_t sample = h.train[order[0]];
  const SampleDraws draws = draw_sample(5, 1, sample);
  std::vector<float> expected(kImageBytes);
  transform_image(d.image(sample), expected.data(), &draws, d.norm);
  CHECK(std::equal(expected.begin(), expected.end(), first.first.begin()));
  CHECK(first.second[0] == d.labels[sample]);
}
