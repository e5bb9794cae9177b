// Fresh models: random weights from a seed plus the Engram hash tensors.
#pragma once
#include <cstdint>
#include <vector>

#include "model/model.h"

namespace memoe {

// Derives each Engram layer's multipliers and prime table sizes (spec §5.2)
// from the config and the compressed vocabulary size.
std::vector<EngramHash> make_engram_hashes(const ModelConfig& cfg, const std::vector<int64_t>& token_map);

// token_map empty = identity. Weights: normal(0, 0.02) for matrices, output
// projections scaled by 1/sqrt(2·layers), ones for norms, zeros for biases,
// the router bias and the Engram short conv (spec §5.4).
Model init_model(const ModelConfig& cfg, uint64_t seed, std::vector<int64_t> token_map = {});

}  // namespace memoe
