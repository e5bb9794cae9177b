// Adds the seconds since the last call to a slot of PartTimes (model.h).
#pragma once
#include <chrono>

namespace memoe {

struct PartClock {
  std::chrono::steady_clock::time_point last = std::chrono::steady_clock::now();
  void operator()(double& slot) {
    const auto now = std::chrono::steady_clock::now();
    slot += std::chrono::duration<double>(now - last).count();
    last = now;
  }
  void restart() { last = std::chrono::steady_clock::now(); }
};

}  // namespace memoe
