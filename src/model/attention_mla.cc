// Multi-head latent attention (spec §3), in the expanded form that training
// uses: q from a low-rank (or direct) projection, k/v decompressed from one
// normed latent per token, and one rotary key shared by all heads.
#include <vector>

#include "kernels/attention.h"
#include "kernels/attention_decode.h"
#include "kernels/elementwise.h"
#include "kernels/linear.h"
#include "kernels/mla_kv.h"
#include "kernels/norm.h"
#include "model/attention.h"

namespace memoe {

namespace {
constexpr float kLatentNormEps = 1e-6f;  // q_a_layernorm / kv_a_layernorm (spec §1)

AttentionShape shape_of(const ModelConfig& c, int64_t batch, int64_t seq_len) {
  AttentionShape s;
  s.batch = batch;
  s.seq_len = seq_len;
  s.n_heads = s.n_kv_heads = c.num_attention_heads;
  s.qk_dim = c.qk_head_dim();
  s.v_dim = c.v_head_dim;
  s.scale = float(c.softmax_scale());
  return s;
}
}  // namespace

void mla_forward(const ModelConfig& c, const RopeTable& rope, const AttentionParams& p, const float* x, int64_t batch,
                 int64_t seq_len, AttentionCache& cache, float* y) {
  const int64_t N = batch * seq_len, d = c.hidden_size, H = c.num_attention_heads;
  const int64_t nope = c.qk_nope_head_dim, pe = c.qk_rope_head_dim, dv = c.v_head_dim, dqk = nope + pe;
  const int64_t kvl = c.kv_lora_rank, ql = c.q_lora_rank;

  cache.q.ensure({N, H, dqk});
  if (ql == 0) {
    linear_forward(x, p.q_proj, nullptr, N, d, H * dqk, cache.q.data());
  } else {
    cache.qa.ensure({N, ql});
    cache.qa_norm.ensure({N, ql});
    cache.qa_rstd.ensure({N});
    linear_forward(x, p.q_a_proj, nullptr, N, d, ql, cache.qa.data());
    rmsnorm_forward(cache.qa.data(), p.q_a_layernorm.data(), kLatentNormEps, N, ql, cache.qa_norm.data(),
                    cache.qa_rstd.data());
    linear_forward(cache.qa_norm.data(), p.q_b_proj, nullptr, N, ql, H * dqk, cache.q.data());
  }
  rope_apply(cache.q.data(), batch, seq_len, H, dqk, nope, rope, false);

  // Latent c and the shared rotary key kpe from one projection.
  Tensor ckv({N, kvl + pe});
  linear_forward(x, p.kv_a_proj_with_mqa, nullptr, N, d, kvl + pe, ckv.data());
  cache.c.ensure({N, kvl});
  cache.c_norm.ensure({N, kvl});
  cache.c_rstd.ensure({N});
  Tensor kpe({N, pe});
  copy_columns(ckv.data(), kvl + pe, N, kvl, cache.c.data(), kvl);
  copy_columns(ckv.data() + kvl, kvl + pe, N, pe, kpe.data(), pe);
  rope_apply(kpe.data(), batch, seq_len, 1, pe, 0, rope, false);
  rmsnorm_forward(cache.c.data(), p.kv_a_layernorm.data(), kLatentNormEps, N, kvl, cache.c_norm.data(),
                  cache.c_rstd.data());
  Tensor kv({N, H, nope + dv});
  linear_forward(cache.c_norm.data(), p.kv_b_proj, nullptr, N, kvl, H * (nope + dv), kv.data());

  cache.k.ensure({N, H, dqk});
  cache.v.ensure({N, H, dv});
  mla_expand_kv(kv.data(), kpe.data(), N, H, nope, pe, dv, cache.k.data(), cache.v.data());

  cache.out.ensure({N, H * dv});
  cache.lse.ensure({batch, H, seq_len});
  attention_forward(shape_of(c, batch, seq_len), cache.q.data(), cache.k.data(), cache.v.data(), cache.out.data(),
                    cache.lse.data());
  linear_forward(cache.out.data(), p.o_proj, nullptr, N, H * dv, d, y);
}

void mla_cached(const ModelConfig& c, const RopeTable& rope, const AttentionParams& p, const float* x, int64_t n,
                const std::vector<AttentionKvCache*>& caches, float* y) {
  const int64_t d = c.hidden_size, H = c.num_attention_heads;
  const int64_t nope = c.qk_nope_head_dim, pe = c.qk_rope_head_dim, dv = c.v_head_dim, dqk = nope + pe;
  const int64_t kvl = c.kv_lora_rank, ql = c.q_lora_rank, rows = int64_t(caches.size()) * n;
  const RopeTable at = rope_at(rope, cached_positions(caches, n));

  std::vector<float> q(size_t(rows * H * dqk));
  if (ql == 0) {
    linear_forward(x, p.q_proj, nullptr, rows, d, H * dqk, q.data());
  } else {
    std::vector<float> qa(size_t(rows * ql)), qa_norm(size_t(rows * ql)), rstd(static_cast<size_t>(rows));
    linear_forward(x, p.q_a_proj, nullptr, rows, d, ql, qa.data());
    rmsnorm_forward(qa.data(), p.q_a_layernorm.data(), kLatentNormEps, rows, ql, qa_norm.data(), rstd.data());
    linear_forward(qa_norm.data(), p.q_b_proj, nullptr, rows, ql, H * dqk, q.data());
  }
  rope_apply(q.data(), 1, rows, H, dqk, nope, at, false);

  // The new positions' latent (normed) and rotary key, then into each cache.
  std::vector<float> ckv(size_t(rows * (kvl + pe))), c_raw(size_t(rows * kvl)), latent(size_t(rows * kvl));
  std::vector<float> rope_key(size_t(rows * pe)), rstd(static_cast<size_t>(rows));
  linear_forward(x, p.kv_a_proj_with_mqa, nullptr, rows, d, kvl + pe, ckv.data());
  copy_columns(ckv.data(), kvl + pe, rows, kvl, c_raw.data(), kvl);
  copy_columns(ckv.data() + kvl, kvl + pe, rows, pe, rope_key.data(), pe);
  rope_apply(rope_key.data(), 1, rows, 1, pe, 0, at, false);
  rmsnorm_forward(c_raw.data(), p.kv_a_layernorm.data(), kLatentNormEps, rows, kvl, latent.data(), rstd.data());

  std::vector<float> out(size_t(rows * H * dv));
  for (size_t s = 0; s < caches.size(); ++s) {
    AttentionKvCache& cache = *caches[s];
    const int64_t first = cache.length, r0 = int64_t(s) * n;
    cache.latent.insert(cache.latent.end(), latent.begin() + r0 * kvl, latent.begin() + (r0 + n) * kvl);
    cache.rope_key.insert(cache.rope_key.end(), rope_key.begin() + r0 * pe, rope_key.begin() + (r0 + n) * pe);
    cache.length = first + n;
    mla_absorbed_attention(q.data() + r0 * H * dqk, n, first, cache.latent.data(), cache.rope_key.data(),
                           p.kv_b_proj, H, nope, pe, kvl, dv, float(c.softmax_scale()),
                           out.data() + r0 * H * dv);
  }
  linear_forward(out.data(), p.o_proj, nullptr, rows, H * dv, d, y);
}

void mla_backward(const ModelConfig& c, const RopeTable& rope, const AttentionParams& p, const float* x,
                  const AttentionCache& cache, const float* dy, int64_t batch, int64_t seq_len,
                  AttentionParams& grads, float* dx) {
  const int64_t N = batch * seq_len, d = c.hidden_size, H = c.num_attention_heads;
  const int64_t nope = c.qk_nope_head_dim, pe = c.qk_rope_head_dim, dv = c.v_head_dim, dqk = nope + pe;
  const int64_t kvl = c.kv_lora_rank, ql = c.q_lora_rank;

  Tensor dout({N, H * dv});
  linear_backward(dy, cache.out.data(), p.o_proj, N, H * dv, d, dout.data(), grads.o_proj.data(), nullptr);
  Tensor dq({N, H, dqk}), dk({N, H, dqk}), dvv({N, H, dv});
  attention_backward(shape_of(c, batch, seq_len), cache.q.data(), cache.k.data(), cache.v.data(), cache.out.data(),
                     cache.lse.data(), dout.data(), dq.data(), dk.data(), dvv.data());

  // Split dk/dv back into the decompressed kv rows and the shared rotary key.
  Tensor dkv({N, H, nope + dv}), dckv({N, kvl + pe});
  mla_expand_kv_backward(dk.data(), dvv.data(), N, H, nope, pe, dv, dkv.data(), dckv.data() + kvl, kvl + pe);
  rope_apply(dckv.data(), batch, seq_len, 1, kvl + pe, kvl, rope, true);
  Tensor dc_norm({N, kvl}), dc({N, kvl});
  linear_backward(dkv.data(), cache.c_norm.data(), p.kv_b_proj, N, kvl, H * (nope + dv), dc_norm.data(),
                  grads.kv_b_proj.data(), nullptr);
  rmsnorm_backward(dc_norm.data(), cache.c.data(), p.kv_a_layernorm.data(), cache.c_rstd.data(), N, kvl, dc.data(),
                   grads.kv_a_layernorm.data());
  copy_columns(dc.data(), kvl, N, kvl, dckv.data(), kvl + pe);
  linear_backward(dckv.data(), x, p.kv_a_proj_with_mqa, N, d, kvl + pe, dx, grads.kv_a_proj_with_mqa.data(),
                  nullptr);

  rope_apply(dq.data(), batch, seq_len, H, dqk, nope, rope, true);
  if (ql == 0) {
    linear_backward(dq.data(), x, p.q_proj, N, d, H * dqk, dx, grads.q_proj.data(), nullptr);
  } else {
    Tensor dqa_norm({N, ql}), dqa({N, ql});
    linear_backward(dq.data(), cache.qa_norm.data(), p.q_b_proj, N, ql, H * dqk, dqa_norm.data(),
                    grads.q_b_proj.data(), nullptr);
    rmsnorm_backward(dqa_norm.data(), cache.qa.data(), p.q_a_layernorm.data(), cache.qa_rstd.data(), N, ql,
                     dqa.data(), grads.q_a_layernorm.data());
    linear_backward(dqa.data(), x, p.q_a_proj, N, d, ql, dx, grads.q_a_proj.data(), nullptr);
  }
}

}  // namespace memoe
