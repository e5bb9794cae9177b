// Rotary frequencies of spec §3, with YaRN when rope_scaling asks for it.
#pragma once
#include <vector>

#include "io/config.h"
#include "kernels/rope.h"

namespace memoe {

// f_i = theta^(-2i/r) for i < r/2, r = the rotary width, YaRN-blended
// (never for V4, whose sliding-window layers have no YaRN).
std::vector<double> rope_frequencies(const ModelConfig& cfg);

inline RopeTable make_model_rope_table(const ModelConfig& cfg, int64_t seq_len) {
  return make_rope_table(rope_frequencies(cfg), seq_len);
}

}  // namespace memoe
