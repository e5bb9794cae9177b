// Self-attention block: MLA (spec §3, expanded form), GQA, or DeepSeek-V4's
// sliding-window attention (deepseek-v4.md §2.2), chosen by
// config.attention. One parameter struct holds the tensors of every kind;
// the kinds that are not in use leave their tensors empty.
#pragma once
#include <vector>

#include "io/config.h"
#include "kernels/rope.h"
#include "model/params.h"

namespace memoe {

struct AttentionParams {
  // MLA
  Tensor q_proj;              // [H*Dqk, d]           (q_lora_rank == 0; GQA too)
  Tensor q_a_proj;            // [q_lora, d]
  Tensor q_a_layernorm;       // [q_lora]
  Tensor q_b_proj;            // [H*Dqk, q_lora]
  Tensor kv_a_proj_with_mqa;  // [kv_lora + rope, d]
  Tensor kv_a_layernorm;      // [kv_lora]
  Tensor kv_b_proj;           // [H*(nope+v), kv_lora]
  // GQA
  Tensor k_proj;  // [KV*hd, d]
  Tensor v_proj;  // [KV*hd, d]
  // MLA and GQA
  Tensor o_proj;  // [d, H*Dv]
  // V4 (its low-rank query is q_a_proj, q_a_layernorm, q_b_proj, named
  // wq_a, q_norm, wq_b in its checkpoints)
  Tensor wkv;        // [hd, d]: the one key (= value) head
  Tensor kv_norm;    // [hd]
  Tensor wo_a;       // [G*o_lora, H*hd/G]: group g's rows g*o_lora ..
  Tensor wo_b;       // [d, G*o_lora]
  Tensor attn_sink;  // [H]

  void allocate(const ModelConfig& cfg);
  void visit(const std::string& prefix, const ParamVisitor& f);  // prefix "model.layers.{i}.self_attn."
};

// What the backward pass needs from the forward pass.
struct AttentionCache {
  Tensor qa, qa_norm, qa_rstd;  // MLA q low-rank path
  Tensor c, c_norm, c_rstd;     // MLA kv latent
  Tensor q, k, v;               // per-head q, k, v after RoPE: [N, H|KV, D]
  Tensor out, lse;              // attention output [N, H*Dv], log-sum-exp [B, H, L] ([N, H] for V4)
  // V4: q before its per-head RMS and that RMS; the key before kv_norm and
  // its rstd (c_norm holds the normed, rotated key); the output after the
  // inverse rotation, and the low-rank groups' output.
  Tensor q_raw, q_rstd, kv_raw, kv_rstd, out_unrotated, groups;
};

// One sequence's attention cache (inference). MLA keeps, per position, only
// the normed latent and the rotated shared key (the absorbed form: nothing
// per head); GQA the rotated keys and the values of each kv head.
struct AttentionKvCache {
  int64_t length = 0;                   // positions held
  std::vector<float> latent, rope_key;  // MLA: [length, kv_lora], [length, rope]
  std::vector<float> k, v;              // GQA: [length, KV, hd] each
  std::vector<float> ring;              // V4: [sliding_window, hd], position t in slot t % window
  int64_t bytes() const {
    return int64_t(sizeof(float) * (latent.size() + rope_key.size() + k.size() + v.size() + ring.size()));
  }
};

// Cache bytes per token and layer: MLA's absorbed form against the expanded
// form (per-head k and v), and GQA's.
int64_t kv_cache_bytes_per_token(const ModelConfig& cfg, bool expanded_mla = false);

// Inference over the caches of S sequences at once: x [S*n, d], n new
// tokens of each sequence in turn (sequence s's at its positions
// caches[s]->length..), the normed inputs; their keys are appended to each
// cache; y [S*n, d]. rope covers every position reached. Equal to the
// forward pass over each whole sequence, position by position, up to fp32
// summation order.
void attention_block_cached(const ModelConfig& cfg, const RopeTable& rope, const AttentionParams& p, const float* x,
                            int64_t n, const std::vector<AttentionKvCache*>& caches, float* y);

// x: [B*L, d] (already normed). Overwrites y [B*L, d].
void attention_block_forward(const ModelConfig& cfg, const RopeTable& rope, const AttentionParams& p, const float* x,
                             int64_t batch, int64_t seq_len, AttentionCache& cache, float* y);
// Adds into grads and dx.
void attention_block_backward(const ModelConfig& cfg, const RopeTable& rope, const AttentionParams& p, const float* x,
                              const AttentionCache& cache, const float* dy, int64_t batch, int64_t seq_len,
                              AttentionParams& grads, float* dx);

// The kinds, behind the dispatch above.
void mla_forward(const ModelConfig&, const RopeTable&, const AttentionParams&, const float* x, int64_t batch,
                 int64_t seq_len, AttentionCache&, float* y);
void mla_backward(const ModelConfig&, const RopeTable&, const AttentionParams&, const float* x, const AttentionCache&,
                  const float* dy, int64_t batch, int64_t seq_len, AttentionParams& grads, float* dx);
void gqa_forward(const ModelConfig&, const RopeTable&, const AttentionParams&, const float* x, int64_t batch,
                 int64_t seq_len, AttentionCache&, float* y);
void mla_cached(const ModelConfig&, const RopeTable&, const AttentionParams&, const float* x, int64_t n,
                const std::vector<AttentionKvCache*>& caches, float* y);
void gqa_cached(const ModelConfig&, const RopeTable&, const AttentionParams&, const float* x, int64_t n,
                const std::vector<AttentionKvCache*>& caches, float* y);
// The positions of the S*n new rows: sequence s's at caches[s]->length + i.
std::vector<int64_t> cached_positions(const std::vector<AttentionKvCache*>& caches, int64_t n);
void gqa_backward(const ModelConfig&, const RopeTable&, const AttentionParams&, const float* x, const AttentionCache&,
                  const float* dy, int64_t batch, int64_t seq_len, AttentionParams& grads, float* dx);
void v4_attention_forward(const ModelConfig&, const RopeTable&, const AttentionParams&, const float* x, int64_t batch,
                          int64_t seq_len, AttentionCache&, float* y);
void v4_attention_cached(const ModelConfig&, const RopeTable&, const AttentionParams&, const float* x, int64_t n,
                         const std::vector<AttentionKvCache*>& caches, float* y);
void v4_attention_backward(const ModelConfig&, const RopeTable&, const AttentionParams&, const float* x,
                           const AttentionCache&, const float* dy, int64_t batch, int64_t seq_len,
                           AttentionParams& grads, float* dx);

}  // namespace memoe
