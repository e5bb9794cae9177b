// Next-token sampling from logits: greedy, or temperature + top-k + nucleus
// (top-p), drawn with a seeded generator so a run is reproducible.
#pragma once
#include <cstdint>
#include <vector>

#include "core/rng.h"

namespace memoe {

struct SamplingConfig {
  float temperature = 1.0f;  // > 0 unless greedy
  int top_k = 0;             // keep the k most likely tokens; 0 = off
  float top_p = 1.0f;        // nucleus mass in (0, 1]; 1 = off
  uint64_t seed = 0;
  bool greedy = false;       // argmax; the other fields are ignored
};

class Sampler {
 public:
  // Throws memoe::Error for a config out of range.
  explicit Sampler(SamplingConfig config);

  // Draws one token id from logits[0, vocab). Greedy: the argmax (ties go to
  // the lowest id). Otherwise softmax(logits / temperature), keep the top_k
  // most likely, renormalise, keep the smallest most-likely set whose mass
  // reaches top_p, renormalise and draw. -inf logits are never drawn; NaN or
  // +inf logits, or no finite logit at all, are errors.
  int32_t sample(const float* logits, int64_t vocab);

  const SamplingConfig& config() const { return config_; }

 private:
  SamplingConfig config_;
  Rng rng_;
  // Reused between calls: candidate ids and their weights.
  std::vector<int32_t> ids_;
  std::vector<double> weights_;
};

}  // namespace memoe
