// Causal scaled-dot-product attention, forward and backward, in float32.
// Tiled over query and key blocks with an online softmax, so memory stays
// O(block^2) per thread rather than O(L^2) per head (spec §3).
#pragma once
#include <cstdint>

namespace memoe {

struct AttentionShape {
  int64_t batch = 0;
  int64_t seq_len = 0;
  int64_t n_heads = 0;     // query heads H
  int64_t n_kv_heads = 0;  // key/value heads KVH; H must be a multiple of it
  int64_t qk_dim = 0;      // per-head dim of queries and keys
  int64_t v_dim = 0;       // per-head dim of values (may differ, e.g. MLA 192 / 128)
  float scale = 1.0f;      // multiplies q.k before the softmax
};

// q: [B, L, H, Dqk], k: [B, L, KVH, Dqk], v: [B, L, KVH, Dv], all row-major
// (the layout of a linear layer's output [B*L, heads*D]).
// out: [B, L, H, Dv]. lse: [B, H, L], log-sum-exp of the scaled scores of
// each query row, kept for the backward pass.
// Query head h reads kv head h / (H / KVH). Query t sees keys 0..t.
// Throws memoe::Error on an invalid shape or a null pointer.
void attention_forward(const AttentionShape& s, const float* q, const float* k, const float* v, float* out,
                       float* lse);

// Gradients of the forward above given dout = dLoss/dout. Adds (+=) into dq,
// dk, dv, which have the layouts of q, k, v; callers zero them when needed.
// out and lse must be the forward's results for the same q, k, v.
void attention_backward(const AttentionShape& s, const float* q, const float* k, const float* v,
                        const float* out, const float* lse, const float* dout, float* dq, float* dk,
                        float* dv);

}  // namespace memoe
