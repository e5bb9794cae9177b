#include "model/rope.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace memoe {

std::vector<double> rope_frequencies(const ModelConfig& cfg) {
  const int64_t r = cfg.rope_dim();
  const double theta = cfg.rope_theta;
  std::vector<double> f(size_t(r / 2));
  for (int64_t i = 0; i < r / 2; ++i) f[size_t(i)] = std::pow(theta, -2.0 * double(i) / double(r));
  // V4 turns YaRN on only on its compressed layers (with compress_rope_theta);
  // its sliding-window layers, the only ones memoe builds, use rope_theta plain.
  if (!cfg.yarn_active() || cfg.is_v4()) return f;

  const YarnConfig& y = *cfg.rope_scaling;
  const double orig = double(y.original_max_position_embeddings);
  auto correction_dim = [&](double beta) {
    return double(r) * std::log(orig / (2.0 * std::numbers::pi * beta)) / (2.0 * std::log(theta));
  };
  double low = std::max(std::floor(correction_dim(y.beta_fast)), 0.0);
  double high = std::min(std::ceil(correction_dim(y.beta_slow)), double(r - 1));
  if (low == high) high += 0.001;
  for (int64_t i = 0; i < r / 2; ++i) {
    double ramp = std::clamp((double(i) - low) / (high - low), 0.0, 1.0);
    double smooth = 1.0 - ramp;
    f[size_t(i)] = f[size_t(i)] / y.factor * (1.0 - smooth) + f[size_t(i)] * smooth;
  }
  return f;
}

}  // namespace memoe
