#include "engine/schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "engine/check.h"

namespace psgd {

void LrSchedule::validate() const {
  PSGD_CHECK(base_lr > 0.0, "the learning rate must be positive, got ", base_lr);
  PSGD_CHECK(gamma > 0.0, "the decay factor gamma must be positive, got ", gamma);
  PSGD_CHECK(std::is_sorted(milestones.begin(), milestones.end()),
             "decay epochs must be in increasing order");
  PSGD_CHECK(last_epoch >= first_epoch, "the schedule ends (epoch ", last_epoch,
             ") before it starts (epoch ", first_epoch, ")");
  PSGD_CHECK(warmup_epochs >= 0, "warm-up epochs must not be negative");
}

float LrSchedule::lr(int epoch, double fraction) const {
  const int before = epoch - first_epoch;  // epochs of this schedule completed before `epoch`
  double rate = base_lr;
  if (kind == Kind::MultiStep) {
    for (int m : milestones)
      if (epoch >= m) rate *= gamma;
  } else {
    const double span = last_epoch - first_epoch + 1;
    rate *= 0.5 * (1.0 + std::cos(std::numbers::pi * std::clamp(before / span, 0.0, 1.0)));
  }
  const double done = before + fraction;  // counting this step
  if (warmup_epochs > 0 && done < warmup_epochs) rate *= std::max(done, 0.0) / warmup_epochs;
  return static_cast<float>(rate);
}

}  // namespace psgd
