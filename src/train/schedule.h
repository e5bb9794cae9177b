// Learning-rate schedule: linear warmup from 0, then cosine decay to
// min_lr_ratio · lr at the last step.
#pragma once
#include <cmath>
#include <cstdint>
#include <numbers>

namespace memoe {

struct LrSchedule {
  double lr = 3e-3;
  int64_t warmup_steps = 100;
  int64_t total_steps = 1000;
  double min_lr_ratio = 0.1;

  // step counts from 0; the learning rate of that step's update.
  double at(int64_t step) const {
    if (warmup_steps > 0 && step < warmup_steps) return lr * double(step + 1) / double(warmup_steps);
    const double span = double(std::max<int64_t>(1, total_steps - warmup_steps));
    const double progress = std::min(1.0, double(step - warmup_steps) / span);
    const double cosine = 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
    return lr * (min_lr_ratio + (1.0 - min_lr_ratio) * cosine);
  }
};

}  // namespace memoe
