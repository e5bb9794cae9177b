// DeepSeek-V4's sliding-window attention (spec deepseek-v4.md §2.2): every
// query head attends one shared key-value head whose key is its value, over
// the last `window` positions, with a learned per-head sink: an extra logit
// whose value is the zero vector. In fp32.
//
//   s_j = scale · q_h · k_j,  j in max(0, t - window + 1) .. t
//   o_h = sum_j e^{s_j - m} k_j / (sum_j e^{s_j - m} + e^{sink_h - m})
//
// Full-sequence passes and cached decode run one query at a time through
// the same function, over keys in position order, so a decoded row has the
// bits of the full forward's.
#pragma once
#include <cstdint>

namespace memoe {

struct WindowAttentionShape {
  int64_t batch = 0;
  int64_t seq_len = 0;
  int64_t n_heads = 0;  // query heads H
  int64_t dim = 0;      // head_dim D, of queries, keys and values alike
  int64_t window = 0;   // keys a query sees, itself included
  float scale = 1.0f;
};

// One query's H heads q [H, D] at position `pos`, over keys kept in a ring
// of `ring` slots (position p in slot p % ring, D floats each), which must
// hold positions max(0, pos - window + 1) .. pos. Writes out [H, D] and,
// when not null, lse [H] (the log of the softmax's denominator, sink
// included).
void window_attention_query(int64_t heads, int64_t dim, int64_t window, float scale, const float* q,
                            const float* sink, const float* keys, int64_t ring, int64_t pos, float* out, float* lse);

// q [B, L, H, D], kv [B, L, D], sink [H]; out [B, L, H, D], lse [B, L, H].
void window_attention_forward(const WindowAttentionShape& s, const float* q, const float* kv, const float* sink,
                              float* out, float* lse);

// Adds the gradients into dq [B, L, H, D], dkv [B, L, D] (the key's and the
// value's paths both, since they are one tensor) and dsink [H], given dout
// and the forward's out and lse. Queries and keys are each written by one
// thread, and dsink is summed in fixed chunks: the bits do not depend on the
// thread count.
void window_attention_backward(const WindowAttentionShape& s, const float* q, const float* kv, const float* sink,
                               const float* out, const float* lse, const float* dout, float* dq, float* dkv,
                               float* dsink);

}  // namespace memoe
