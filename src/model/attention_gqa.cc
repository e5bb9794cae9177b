// Grouped-query attention: H query heads share KV key/value heads; RoPE over
// the whole head_dim.
#include <vector>

#include "kernels/attention.h"
#include "kernels/attention_decode.h"
#include "kernels/linear.h"
#include "model/attention.h"

namespace memoe {

namespace {
AttentionShape shape_of(const ModelConfig& c, int64_t batch, int64_t seq_len) {
  AttentionShape s;
  s.batch = batch;
  s.seq_len = seq_len;
  s.n_heads = c.num_attention_heads;
  s.n_kv_heads = c.num_key_value_heads;
  s.qk_dim = s.v_dim = c.head_dim;
  s.scale = float(c.softmax_scale());
  return s;
}
}  // namespace

void gqa_forward(const ModelConfig& c, const RopeTable& rope, const AttentionParams& p, const float* x, int64_t batch,
                 int64_t seq_len, AttentionCache& cache, float* y) {
  const int64_t N = batch * seq_len, d = c.hidden_size, H = c.num_attention_heads, KV = c.num_key_value_heads;
  const int64_t hd = c.head_dim;
  cache.q.ensure({N, H, hd});
  cache.k.ensure({N, KV, hd});
  cache.v.ensure({N, KV, hd});
  linear_forward(x, p.q_proj, nullptr, N, d, H * hd, cache.q.data());
  linear_forward(x, p.k_proj, nullptr, N, d, KV * hd, cache.k.data());
  linear_forward(x, p.v_proj, nullptr, N, d, KV * hd, cache.v.data());
  rope_apply(cache.q.data(), batch, seq_len, H, hd, 0, rope, false);
  rope_apply(cache.k.data(), batch, seq_len, KV, hd, 0, rope, false);
  cache.out.ensure({N, H * hd});
  cache.lse.ensure({batch, H, seq_len});
  attention_forward(shape_of(c, batch, seq_len), cache.q.data(), cache.k.data(), cache.v.data(), cache.out.data(),
                    cache.lse.data());
  linear_forward(cache.out.data(), p.o_proj, nullptr, N, H * hd, d, y);
}

void gqa_cached(const ModelConfig& c, const RopeTable& rope, const AttentionParams& p, const float* x, int64_t n,
                const std::vector<AttentionKvCache*>& caches, float* y) {
  const int64_t d = c.hidden_size, H = c.num_attention_heads, KV = c.num_key_value_heads, hd = c.head_dim;
  const int64_t rows = int64_t(caches.size()) * n, kv_width = KV * hd;
  std::vector<float> q(size_t(rows * H * hd)), k(size_t(rows * kv_width)), v(size_t(rows * kv_width));
  std::vector<float> out(size_t(rows * H * hd));
  linear_forward(x, p.q_proj, nullptr, rows, d, H * hd, q.data());
  linear_forward(x, p.k_proj, nullptr, rows, d, kv_width, k.data());
  linear_forward(x, p.v_proj, nullptr, rows, d, kv_width, v.data());
  const RopeTable at = rope_at(rope, cached_positions(caches, n));
  rope_apply(q.data(), 1, rows, H, hd, 0, at, false);
  rope_apply(k.data(), 1, rows, KV, hd, 0, at, false);
  for (size_t s = 0; s < caches.size(); ++s) {
    AttentionKvCache& cache = *caches[s];
    const int64_t first = cache.length, r0 = int64_t(s) * n;
    cache.k.insert(cache.k.end(), k.begin() + r0 * kv_width, k.begin() + (r0 + n) * kv_width);
    cache.v.insert(cache.v.end(), v.begin() + r0 * kv_width, v.begin() + (r0 + n) * kv_width);
    cache.length = first + n;
    cached_attention(q.data() + r0 * H * hd, n, first, cache.k.data(), cache.v.data(), H, KV, hd, hd,
                     float(c.softmax_scale()), out.data() + r0 * H * hd);
  }
  linear_forward(out.data(), p.o_proj, nullptr, rows, H * hd, d, y);
}

void gqa_backward(const ModelConfig& c, const RopeTable& rope, const AttentionParams& p, const float* x,
                  const AttentionCache& cache, const float* dy, int64_t batch, int64_t seq_len,
                  AttentionParams& grads, float* dx) {
  const int64_t N = batch * seq_len, d = c.hidden_size, H = c.num_attention_heads, KV = c.num_key_value_heads;
  const int64_t hd = c.head_dim;
  Tensor dout({N, H * hd}), dq({N, H, hd}), dk({N, KV, hd}), dv({N, KV, hd});
  linear_backward(dy, cache.out.data(), p.o_proj, N, H * hd, d, dout.data(), grads.o_proj.data(), nullptr);
  attention_backward(shape_of(c, batch, seq_len), cache.q.data(), cache.k.data(), cache.v.data(), cache.out.data(),
                     cache.lse.data(), dout.data(), dq.data(), dk.data(), dv.data());
  rope_apply(dq.data(), batch, seq_len, H, hd, 0, rope, true);
  rope_apply(dk.data(), batch, seq_len, KV, hd, 0, rope, true);
  linear_backward(dq.data(), x, p.q_proj, N, d, H * hd, dx, grads.q_proj.data(), nullptr);
  linear_backward(dk.data(), x, p.k_proj, N, d, KV * hd, dx, grads.k_proj.data(), nullptr);
  linear_backward(dv.data(), x, p.v_proj, N, d, KV * hd, dx, grads.v_proj.data(), nullptr);
}

}  // namespace memoe
