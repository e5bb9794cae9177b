// DeepSeek-V4's attention on sliding-window layers (compress ratio 0;
// deepseek-v4.md §2.2, inference/model.py Attention.forward):
//   qr = RMSNorm(x·wq_aᵀ; q_norm);  q = qr·wq_bᵀ per head, rescaled by its
//   own RMS (no weight), RoPE on its last rope dims;
//   k = v = RMSNorm(x·wkvᵀ; kv_norm), RoPE on its last rope dims;
//   o = window attention with the sink; the inverse rotation on o's rope
//   dims; group g of heads through its rows of wo_a; then wo_b.
// In fp32 (DeepSeek's FP8 simulation of the key is not reproduced here).
#include <vector>

#include "kernels/attention_window.h"
#include "kernels/linear.h"
#include "kernels/norm.h"
#include "model/attention.h"

namespace memoe {

namespace {

struct V4Dims {
  int64_t N, d, H, hd, rd, ql, G, ol;
  int64_t group_in() const { return H * hd / G; }  // a group's input width
};

V4Dims dims_of(const ModelConfig& c, int64_t rows) {
  return {rows,          c.hidden_size,     c.num_attention_heads, c.head_dim, c.qk_rope_head_dim,
          c.q_lora_rank, c.v4->o_groups,    c.v4->o_lora_rank};
}

WindowAttentionShape window_shape(const ModelConfig& c, int64_t batch, int64_t seq_len) {
  WindowAttentionShape s;
  s.batch = batch;
  s.seq_len = seq_len;
  s.n_heads = c.num_attention_heads;
  s.dim = c.head_dim;
  s.window = c.v4->sliding_window;
  s.scale = float(c.softmax_scale());
  return s;
}

// Group g's rows of wo_a as a matrix of its own (fp32 and bf16 copies alike).
WeightMatrix group_rows(const Tensor& w, int64_t offset) {
  WeightMatrix m(w);
  if (m.f32) m.f32 += offset;
  if (m.bf16) m.bf16 += offset;
  return m;
}

// [N, G, w] <-> [G, N, w]: each group's rows contiguous for its product.
void to_group_major(const float* x, int64_t N, int64_t G, int64_t w, float* y) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t g = 0; g < G; ++g)
      std::copy(x + (n * G + g) * w, x + (n * G + g + 1) * w, y + (g * N + n) * w);
}
void from_group_major(const float* y, int64_t N, int64_t G, int64_t w, float* x) {
  for (int64_t g = 0; g < G; ++g)
    for (int64_t n = 0; n < N; ++n)
      std::copy(y + (g * N + n) * w, y + (g * N + n + 1) * w, x + (n * G + g) * w);
}

// The grouped low-rank output: group g's heads through rows g·ol.. of wo_a
// (into groups [N, G·ol]), then wo_b into y.
void grouped_output(const V4Dims& k, const AttentionParams& p, const float* o, float* groups, float* y) {
  const int64_t gi = k.group_in();
  std::vector<float> xg(size_t(k.N * k.H * k.hd)), rg(size_t(k.G * k.N * k.ol));
  to_group_major(o, k.N, k.G, gi, xg.data());
  for (int64_t g = 0; g < k.G; ++g)
    linear_forward(xg.data() + g * k.N * gi, group_rows(p.wo_a, g * k.ol * gi), nullptr, k.N, gi, k.ol,
                   rg.data() + g * k.N * k.ol);
  from_group_major(rg.data(), k.N, k.G, k.ol, groups);
  linear_forward(groups, p.wo_b, nullptr, k.N, k.G * k.ol, k.d, y);
}

// The rotated queries o.q [N, H, hd] and keys o.c_norm [N, hd] of rows x at
// the rows of `rope`, with what their backward needs.
void queries_and_keys(const ModelConfig& c, const V4Dims& k, const RopeTable& rope, int64_t batch, int64_t seq_len,
                      const AttentionParams& p, const float* x, AttentionCache& o) {
  const float eps = float(c.rms_norm_eps);
  o.qa.ensure({k.N, k.ql});
  o.qa_norm.ensure({k.N, k.ql});
  o.qa_rstd.ensure({k.N});
  linear_forward(x, p.q_a_proj, nullptr, k.N, k.d, k.ql, o.qa.data());
  rmsnorm_forward(o.qa.data(), p.q_a_layernorm.data(), eps, k.N, k.ql, o.qa_norm.data(), o.qa_rstd.data());
  o.q_raw.ensure({k.N, k.H, k.hd});
  o.q_rstd.ensure({k.N * k.H});
  o.q.ensure({k.N, k.H, k.hd});
  linear_forward(o.qa_norm.data(), p.q_b_proj, nullptr, k.N, k.ql, k.H * k.hd, o.q_raw.data());
  const std::vector<float> ones(size_t(k.hd), 1.0f);
  rmsnorm_forward(o.q_raw.data(), ones.data(), eps, k.N * k.H, k.hd, o.q.data(), o.q_rstd.data());
  rope_apply(o.q.data(), batch, seq_len, k.H, k.hd, k.hd - k.rd, rope, false);
  o.kv_raw.ensure({k.N, k.hd});
  o.kv_rstd.ensure({k.N});
  o.c_norm.ensure({k.N, k.hd});
  linear_forward(x, p.wkv, nullptr, k.N, k.d, k.hd, o.kv_raw.data());
  rmsnorm_forward(o.kv_raw.data(), p.kv_norm.data(), eps, k.N, k.hd, o.c_norm.data(), o.kv_rstd.data());
  rope_apply(o.c_norm.data(), batch, seq_len, 1, k.hd, k.hd - k.rd, rope, false);
}

}  // namespace

void v4_attention_cached(const ModelConfig& c, const RopeTable& rope, const AttentionParams& p, const float* x,
                         int64_t n, const std::vector<AttentionKvCache*>& caches, float* y) {
  const V4Dims k = dims_of(c, int64_t(caches.size()) * n);
  const int64_t W = c.v4->sliding_window;
  const RopeTable at = rope_at(rope, cached_positions(caches, n));
  AttentionCache qk;
  queries_and_keys(c, k, at, 1, k.N, p, x, qk);
  // Each sequence's keys in a ring of `window` slots (position t in slot
  // t % window): the cache does not grow with the context. Rows go in
  // position order, each key written before its query reads the ring.
  Tensor out({k.N, k.H * k.hd});
  const float scale = float(c.softmax_scale());
  for (size_t s = 0; s < caches.size(); ++s) {
    AttentionKvCache& cache = *caches[s];
    cache.ring.resize(size_t(W * k.hd));
    for (int64_t i = 0; i < n; ++i) {
      const int64_t row = int64_t(s) * n + i, pos = cache.length + i;
      std::copy(qk.c_norm.data() + row * k.hd, qk.c_norm.data() + (row + 1) * k.hd, cache.ring.data() + (pos % W) * k.hd);
      window_attention_query(k.H, k.hd, W, scale, qk.q.data() + row * k.H * k.hd, p.attn_sink.data(),
                             cache.ring.data(), W, pos, out.data() + row * k.H * k.hd, nullptr);
    }
    cache.length += n;
  }
  rope_apply(out.data(), 1, k.N, k.H, k.hd, k.hd - k.rd, at, true);
  Tensor groups({k.N, k.G * k.ol});
  grouped_output(k, p, out.data(), groups.data(), y);
}

void v4_attention_forward(const ModelConfig& c, const RopeTable& rope, const AttentionParams& p, const float* x,
                          int64_t batch, int64_t seq_len, AttentionCache& cache, float* y) {
  const V4Dims k = dims_of(c, batch * seq_len);
  queries_and_keys(c, k, rope, batch, seq_len, p, x, cache);
  cache.out.ensure({k.N, k.H * k.hd});
  cache.lse.ensure({k.N, k.H});
  window_attention_forward(window_shape(c, batch, seq_len), cache.q.data(), cache.c_norm.data(),
                           p.attn_sink.data(), cache.out.data(), cache.lse.data());
  cache.out_unrotated.ensure({k.N, k.H * k.hd});
  std::copy(cache.out.data(), cache.out.data() + cache.out.numel(), cache.out_unrotated.data());
  rope_apply(cache.out_unrotated.data(), batch, seq_len, k.H, k.hd, k.hd - k.rd, rope, true);

  cache.groups.ensure({k.N, k.G * k.ol});
  grouped_output(k, p, cache.out_unrotated.data(), cache.groups.data(), y);
}

void v4_attention_backward(const ModelConfig& c, const RopeTable& rope, const AttentionParams& p, const float* x,
                           const AttentionCache& cache, const float* dy, int64_t batch, int64_t seq_len,
                           AttentionParams& grads, float* dx) {
  const V4Dims k = dims_of(c, batch * seq_len);
  const int64_t gi = k.group_in();
  Tensor dgroups({k.N, k.G * k.ol});
  linear_backward(dy, cache.groups.data(), p.wo_b, k.N, k.G * k.ol, k.d, dgroups.data(), grads.wo_b.data(), nullptr);
  std::vector<float> drg(size_t(k.G * k.N * k.ol)), xg(size_t(k.N * k.H * k.hd)), dxg(xg.size(), 0.0f);
  to_group_major(dgroups.data(), k.N, k.G, k.ol, drg.data());
  to_group_major(cache.out_unrotated.data(), k.N, k.G, gi, xg.data());
  for (int64_t g = 0; g < k.G; ++g)
    linear_backward(drg.data() + g * k.N * k.ol, xg.data() + g * k.N * gi, group_rows(p.wo_a, g * k.ol * gi), k.N, gi,
                    k.ol, dxg.data() + g * k.N * gi, grads.wo_a.data() + g * k.ol * gi, nullptr);
  Tensor dout({k.N, k.H * k.hd});
  from_group_major(dxg.data(), k.N, k.G, gi, dout.data());
  // The inverse rotation's backward is the rotation.
  rope_apply(dout.data(), batch, seq_len, k.H, k.hd, k.hd - k.rd, rope, false);

  Tensor dq({k.N, k.H, k.hd}), dkv({k.N, k.hd});
  window_attention_backward(window_shape(c, batch, seq_len), cache.q.data(), cache.c_norm.data(), p.attn_sink.data(),
                            cache.out.data(), cache.lse.data(), dout.data(), dq.data(), dkv.data(),
                            grads.attn_sink.data());

  rope_apply(dkv.data(), batch, seq_len, 1, k.hd, k.hd - k.rd, rope, true);
  Tensor dkv_raw({k.N, k.hd});
  rmsnorm_backward(dkv.data(), cache.kv_raw.data(), p.kv_norm.data(), cache.kv_rstd.data(), k.N, k.hd, dkv_raw.data(),
                   grads.kv_norm.data());
  linear_backward(dkv_raw.data(), x, p.wkv, k.N, k.d, k.hd, dx, grads.wkv.data(), nullptr);

  rope_apply(dq.data(), batch, seq_len, k.H, k.hd, k.hd - k.rd, rope, true);
  Tensor dq_raw({k.N, k.H, k.hd}), dqa_norm({k.N, k.ql}), dqa({k.N, k.ql});
  const std::vector<float> ones(size_t(k.hd), 1.0f);
  rmsnorm_backward(dq.data(), cache.q_raw.data(), ones.data(), cache.q_rstd.data(), k.N * k.H, k.hd, dq_raw.data(),
                   nullptr);
  linear_backward(dq_raw.data(), cache.qa_norm.data(), p.q_b_proj, k.N, k.ql, k.H * k.hd, dqa_norm.data(),
                  grads.q_b_proj.data(), nullptr);
  rmsnorm_backward(dqa_norm.data(), cache.qa.data(), p.q_a_layernorm.data(), cache.qa_rstd.data(), k.N, k.ql,
                   dqa.data(), grads.q_a_layernorm.data());
  linear_backward(dqa.data(), x, p.q_a_proj, k.N, k.d, k.ql, dx, grads.q_a_proj.data(), nullptr);
}

}  // namespace memoe
