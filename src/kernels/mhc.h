// mHC, manifold-constrained hyper-connections (DeepSeek-V4; spec
// deepseek-v4.md §1): the residual is n streams of width d per token, and
// each sublayer reads a mix of them and writes back into all of them
// through a doubly-stochastic n x n matrix made by Sinkhorn rounds.
//
// Layouts, per token: streams x [n, d] (stream-major, so a token's row is the
// flattened v of the spec, n·d long); mixes [m] with m = (2 + n)·n: n pre,
// n post, then the n x n combination row by row; comb [n, n], row j the
// source stream, column k the stream it feeds. All fp32, as DeepSeek
// computes them; every function is per token, so its bits do not depend on
// the thread count, and the parameter gradients are reduced in fixed chunks.
#pragma once
#include <cstdint>

namespace memoe {

struct MhcDims {
  int64_t tokens = 0;
  int n = 1;                // hc_mult streams
  int64_t d = 0;            // width of one stream
  int sinkhorn_iters = 20;  // hc_sinkhorn_iters
  float hc_eps = 1e-6f;     // pre's floor and every Sinkhorn division's
  float norm_eps = 1e-6f;   // the RMS over a token's n·d values (rms_norm_eps)
  int64_t width() const { return int64_t(n) * d; }
  int mixes() const { return (2 + n) * n; }
};

// One sublayer's coefficients and its input (Block.hc_pre):
//   r = 1/sqrt(mean(v^2) + norm_eps), z = (fn · v)·r          -> mixes [N, m], rstd [N]
//   pre_j = sigmoid(scale0·z_j + base_j) + hc_eps             -> pre [N, n]
//   post_j = 2·sigmoid(scale1·z_{n+j} + base_{n+j})           -> post [N, n]
//   comb = Sinkhorn(scale2·z_{2n..} + base_{2n..})            -> comb [N, n, n]
//   u = sum_j pre_j x_j                                        -> u [N, d]
// fn [m, n·d], scale [3], base [m]. Sinkhorn: a row softmax plus hc_eps,
// then a column division, then sinkhorn_iters - 1 rounds of a row and a
// column division, each dividing by (sum + hc_eps): DeepSeek's order.
void mhc_pre_forward(const MhcDims& dims, const float* x, const float* fn, const float* scale, const float* base,
                     float* mixes, float* rstd, float* pre, float* post, float* comb, float* u);

// The backward of mhc_pre_forward given the gradients of its outputs: du
// [N, d] (of u), dpost [N, n], dcomb [N, n, n] (from mhc_post_backward).
// Adds into dx [N, n, d], dfn [m, n·d], dscale [3], dbase [m]. Sinkhorn's
// rounds are recomputed per token from the saved mixes (no n x n matrix per
// round is kept), and the backward runs through every round.
void mhc_pre_backward(const MhcDims& dims, const float* x, const float* fn, const float* scale, const float* base,
                      const float* mixes, const float* rstd, const float* pre, const float* du, const float* dpost,
                      const float* dcomb, float* dx, float* dfn, float* dscale, float* dbase);

// The write-back (Block.hc_post): y_k = post_k·f + sum_j comb_jk·x_j, for
// the sublayer's output f [N, d]. y [N, n, d] must not alias x.
void mhc_post_forward(const MhcDims& dims, const float* x, const float* f, const float* post, const float* comb,
                      float* y);

// Its backward: adds comb's share of dy into dx; writes df [N, d], dpost
// [N, n] and dcomb [N, n, n].
void mhc_post_backward(const MhcDims& dims, const float* x, const float* f, const float* post, const float* comb,
                       const float* dy, float* dx, float* df, float* dpost, float* dcomb);

// The head collapse before the final norm (ParallelHead.hc_head): with z as
// above from fn [n, n·d], w_j = sigmoid(scale0·z_j + base_j) + hc_eps and
// y = sum_j w_j x_j. mixes [N, n], rstd [N], w [N, n], y [N, d].
void mhc_head_forward(const MhcDims& dims, const float* x, const float* fn, const float* scale, const float* base,
                      float* mixes, float* rstd, float* w, float* y);
// Adds into dx, dfn [n, n·d], dscale [1], dbase [n].
void mhc_head_backward(const MhcDims& dims, const float* x, const float* fn, const float* scale, const float* base,
                       const float* mixes, const float* rstd, const float* w, const float* dy, float* dx, float* dfn,
                       float* dscale, float* dbase);

}  // namespace memoe
