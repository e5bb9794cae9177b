// Attention of a few new query rows against one sequence's cached keys:
// decode (one row) and chunked prefill (a chunk of rows). Row i of the
// chunk sits at position first + i and sees cache rows 0..first+i, so the
// cache must already hold the chunk's own keys. Scores, softmax and sums
// in fp32. Parallel over (row, head).
#pragma once
#include <cstdint>

#include "kernels/weight_matrix.h"

namespace memoe {

// GQA: q [n, H, D] (rotated), k [T, KV, D] (rotated), v [T, KV, Dv] with
// T >= first + n; query head h reads kv head h / (H / KV). out [n, H, Dv].
void cached_attention(const float* q, int64_t n, int64_t first, const float* k, const float* v, int64_t heads,
                      int64_t kv_heads, int64_t qk_dim, int64_t v_dim, float scale, float* out);

// MLA in the absorbed form (DeepSeek-V2/V3 inference): the cache holds per
// position only the normed latent c [T, kvl] and the rotated shared key
// k_pe [T, pe]. For each head, the query's no-rope part is taken into the
// latent space through the key part of kv_b_proj (W_uk[h]: rows h*(nope+dv)
// .. +nope), scored against c plus q_pe . k_pe, and the softmax-weighted sum
// of c is taken out through the value part (W_uv[h]: the next dv rows).
// q [n, H, nope+pe] (its pe part rotated); kv_b [H*(nope+dv), kvl];
// out [n, H, dv]. The same numbers as expanding k and v, in another order.
// kv_b's fp32 values when it has them, else its bf16 ones widened.
void mla_absorbed_attention(const float* q, int64_t n, int64_t first, const float* latent, const float* rope_key,
                            WeightMatrix kv_b, int64_t heads, int64_t nope, int64_t pe, int64_t kvl, int64_t dv,
                            float scale, float* out);

}  // namespace memoe
