// Token ids drawn uniformly from a config's vocabulary, for the model tests.
#pragma once
#include <cstdint>
#include <vector>

#include "core/rng.h"
#include "io/config.h"

namespace memoe::testing {

inline std::vector<int64_t> random_ids(const ModelConfig& cfg, int64_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<int64_t> ids(static_cast<size_t>(n));
  for (auto& id : ids) id = int64_t(rng.below(uint64_t(cfg.vocab_size)));
  return ids;
}

}  // namespace memoe::testing
