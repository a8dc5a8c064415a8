// Learning-rate schedules, by epoch (1-based, as the reference counts them) and the fraction of
// that epoch done: the reference's multi-step decay, cosine decay, and a linear warm-up.
#pragma once

#include <vector>

namespace psgd {

struct LrSchedule {
  enum class Kind { MultiStep, Cosine };

  Kind kind = Kind::MultiStep;
  // In double, as the reference's Python floats: PyTorch multiplies lr by gamma in double and
  // rounds the product to float32 once, where float inputs would land an ulp off.
  double base_lr = 0.1;
  std::vector<int> milestones;  // MultiStep: lr *= gamma from each of these epochs on
  double gamma = 0.1;
  int first_epoch = 1;          // Cosine and warm-up count from here ...
  int last_epoch = 1;           // ... to here (inclusive)
  int warmup_epochs = 0;        // linear ramp from 0 over this many epochs, then the schedule

  // The learning rate for `epoch` when `fraction` (0 <= fraction < 1) of it is done.
  float lr(int epoch, double fraction = 0.0) const;
  void validate() const;  // a clear error for an impossible schedule
};

}  // namespace psgd
