// Shared by the parity dump helpers: synthetic batches, randomised BN state, and writing what
// PyTorch needs to follow our branch decisions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/net.h"
#include "engine/safetensors.h"

namespace psgd::test {

struct Batch {
  std::vector<float> images;
  std::vector<int32_t> labels;

  Tensor images_tensor(const Net& net) const;
  Tensor labels_tensor() const;
};

// `batch` images uniform in [-2, 2) and labels, reproducible from (seed, stream).
Batch synthetic_batch(const Net& net, int batch, uint64_t seed, uint64_t stream);
// F32 "images" and I32 "labels" from a safetensors file.
Batch batch_from_file(const std::string& path);

// BN starts at weight 1, bias 0, mean 0, var 1; random values make every BN term matter.
void randomise_batch_norm(ParamStore& params, uint64_t seed);

std::vector<int64_t> dims(const Shape& s);

// For every ReLU of the last forward: "<prefix>relu_open.<name>" (U8), 1 where the input passed.
void add_relu_decisions(SafeTensorsWriter& w, const Net& net, const std::string& prefix);

}  // namespace psgd::test
