// Packs buffers with known lifetimes into one arena: buffers never alive at the same time share
// memory. The Net uses it for activation gradients, each alive only from the backward step that
// first writes it to the step that consumes it.
#pragma once

#include <cstdint>
#include <vector>

namespace psgd {

struct LiveBuffer {
  int64_t elements;
  int first, last;  // steps, inclusive: alive from `first` to `last`
};

struct Packing {
  std::vector<int64_t> offsets;  // in elements, one per buffer
  int64_t total_elements = 0;
};

// Greedy by first use: each buffer takes the smallest free slot that fits, else grows the largest
// free slot, else opens a new one.
Packing pack_buffers(const std::vector<LiveBuffer>& buffers);

}  // namespace psgd
