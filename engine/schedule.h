// Learning-rate schedules, by epoch (1-based, as the reference counts them) and the fraction of
// that epoch done: the reference's multi-step decay, cosine decay, and a linear warm-up.
// The decays change once per epoch, as the reference's schedulers step; the warm-up every step,
// so that its first epoch trains too.
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
  int warmup_epochs = 0;        // linear ramp over this many epochs' steps, then the schedule

  // The learning rate of the step that completes `fraction` (0 < fraction <= 1) of `epoch`.
  float lr(int epoch, double fraction = 1.0) const;
  void validate() const;  // a clear error for an impossible schedule
};

}  // namespace psgd
