#include "engine/interval_packing.h"

#include <algorithm>
#include <numeric>

namespace psgd {

Packing pack_buffers(const std::vector<LiveBuffer>& buffers) {
  struct Slot {
    int64_t elements = 0;
    int busy_until = -1;  // last step of the current tenant
    bool used = false;
  };
  std::vector<size_t> order(buffers.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return buffers[a].first < buffers[b].first; });

  std::vector<Slot> slots;
  std::vector<size_t> slot_of(buffers.size());
  for (size_t i : order) {
    const LiveBuffer& b = buffers[i];
    Slot* best = nullptr;
    for (Slot& s : slots) {
      if (s.used && s.busy_until >= b.first) continue;
      const bool fits = s.elements >= b.elements, best_fits = best && best->elements >= b.elements;
      if (!best || (fits && (!best_fits || s.elements < best->elements)) ||
          (!fits && !best_fits && s.elements > best->elements))
        best = &s;
    }
    if (!best) best = &slots.emplace_back();
    best->elements = std::max(best->elements, b.elements);
    best->busy_until = b.last;
    best->used = true;
    slot_of[i] = static_cast<size_t>(best - slots.data());
  }

  Packing packing;
  std::vector<int64_t> slot_offset(slots.size());
  for (size_t s = 0; s < slots.size(); ++s) {
    slot_offset[s] = packing.total_elements;
    packing.total_elements += slots[s].elements;
  }
  packing.offsets.resize(buffers.size());
  for (size_t i = 0; i < buffers.size(); ++i) packing.offsets[i] = slot_offset[slot_of[i]];
  return packing;
}

}  // namespace psgd
