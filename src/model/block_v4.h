// A DeepSeek-V4 block (deepseek-v4.md §1.3, inference/model.py Block): the
// residual is hc_mult streams of width d; attention and the MoE each read a
// mix of them (mHC pre), and write back into all of them (mHC post); the
// head collapses the streams before the final norm. With hc_mult 1 there is
// no mixing at all: a plain residual, and no hc_* tensors.
#pragma once
#include <string>

#include "io/config.h"
#include "kernels/mhc.h"
#include "model/params.h"

namespace memoe {

// One mix's parameters: fn [m, n·d], base [m], scale [3] for a sublayer
// (m = (2 + n)·n), or fn [n, n·d], base [n], scale [1] for the head.
struct MhcParams {
  Tensor fn, base, scale;
  void allocate(int n, int64_t d, bool head);
  // prefix e.g. "layers.3.hc_attn_" -> fn, base, scale (no ".weight").
  void visit(const std::string& prefix, const ParamVisitor& f, bool head);
};

// One sublayer's mix, kept for the backward pass.
struct MhcState {
  Tensor mixes, rstd, pre, post, comb;  // [N, m], [N], [N, n], [N, n], [N, n, n]
  Tensor u;                             // [N, d]: the collapsed input, before the sublayer's norm
  Tensor f;                             // [N, d]: the sublayer's output
};

// The head collapse's state.
struct MhcHeadState {
  Tensor mixes, rstd, w, y;  // [N, n], [N], [N, n], [N, d]
};

MhcDims mhc_dims(const ModelConfig& cfg, int64_t tokens);
bool uses_mhc(const ModelConfig& cfg);  // a V4 config with hc_mult > 1

}  // namespace memoe
