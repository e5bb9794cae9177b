#include "serve/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"

namespace memoe {

Sampler::Sampler(SamplingConfig config) : config_(config), rng_(config.seed) {
  if (!config_.greedy)
    MEMOE_CHECK(config_.temperature > 0.0f && std::isfinite(config_.temperature),
                "sampling: temperature must be a finite number > 0 (got ", config_.temperature,
                "); use greedy decoding for temperature 0");
  MEMOE_CHECK(config_.top_k >= 0, "sampling: top_k must be >= 0 (got ", config_.top_k, ")");
  MEMOE_CHECK(config_.top_p > 0.0f && config_.top_p <= 1.0f, "sampling: top_p must be in (0, 1] (got ",
              config_.top_p, ")");
}

int32_t Sampler::sample(const float* logits, int64_t vocab) {
  MEMOE_CHECK(logits != nullptr, "sampling: no logits");
  MEMOE_CHECK(vocab > 0 && vocab <= std::numeric_limits<int32_t>::max(), "sampling: vocabulary size ", vocab,
              " out of range");

  // One pass: reject NaN/+inf, find the argmax (first of equal maxima).
  int64_t best = -1;
  for (int64_t i = 0; i < vocab; ++i) {
    const float v = logits[i];
    MEMOE_CHECK(!std::isnan(v) && v != std::numeric_limits<float>::infinity(), "sampling: logit of token ", i,
                " is ", v);
    if (v == -std::numeric_limits<float>::infinity()) continue;
    if (best < 0 || v > logits[best]) best = i;
  }
  MEMOE_CHECK(best >= 0, "sampling: every logit is -inf");
  if (config_.greedy) return int32_t(best);

  // Unnormalised softmax weights, relative to the maximum so none overflows.
  // Tokens whose weight underflows to 0 could never be drawn; drop them.
  const double max_logit = logits[best];
  const double inv_t = 1.0 / double(config_.temperature);
  ids_.clear();
  weights_.clear();
  for (int64_t i = 0; i < vocab; ++i) {
    if (logits[i] == -std::numeric_limits<float>::infinity()) continue;
    const double w = std::exp((double(logits[i]) - max_logit) * inv_t);
    if (w > 0.0) {
      ids_.push_back(int32_t(i));
      weights_.push_back(w);
    }
  }

  // Order candidates most likely first; ties by id keep the draw
  // reproducible whatever the sort algorithm does with equal keys.
  std::vector<int32_t> order(ids_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = int32_t(i);
  auto more_likely = [&](int32_t a, int32_t b) {
    return weights_[a] != weights_[b] ? weights_[a] > weights_[b] : ids_[a] < ids_[b];
  };
  size_t keep = order.size();
  if (config_.top_k > 0 && size_t(config_.top_k) < keep) keep = size_t(config_.top_k);
  const bool nucleus = config_.top_p < 1.0f;
  if (nucleus || keep < order.size()) {
    std::partial_sort(order.begin(), order.begin() + keep, order.end(), more_likely);
  }

  if (nucleus) {
    // Smallest most-likely prefix whose mass (within the top-k set) reaches top_p.
    double total = 0.0;
    for (size_t i = 0; i < keep; ++i) total += weights_[order[i]];
    const double target = double(config_.top_p) * total;
    double mass = 0.0;
    size_t n = 0;
    while (n < keep) {
      mass += weights_[order[n++]];
      if (mass >= target) break;
    }
    keep = n;
  }

  double total = 0.0;
  for (size_t i = 0; i < keep; ++i) total += weights_[order[i]];
  const double u = rng_.uniform() * total;
  double mass = 0.0;
  for (size_t i = 0; i < keep; ++i) {
    mass += weights_[order[i]];
    if (u < mass) return ids_[order[i]];
  }
  return ids_[order[keep - 1]];  // u landed on the rounding error at the top
}

}  // namespace memoe
