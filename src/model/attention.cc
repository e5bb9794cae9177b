#include "model/attention.h"

namespace memoe {

void AttentionParams::allocate(const ModelConfig& c) {
  const int64_t d = c.hidden_size, H = c.num_attention_heads;
  if (c.attention == AttentionKind::MLA) {
    const int64_t dqk = c.qk_head_dim();
    if (c.q_lora_rank == 0) {
      q_proj.resize({H * dqk, d});
    } else {
      q_a_proj.resize({c.q_lora_rank, d});
      q_a_layernorm.resize({c.q_lora_rank});
      q_b_proj.resize({H * dqk, c.q_lora_rank});
    }
    kv_a_proj_with_mqa.resize({c.kv_lora_rank + c.qk_rope_head_dim, d});
    kv_a_layernorm.resize({c.kv_lora_rank});
    kv_b_proj.resize({H * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank});
    o_proj.resize({d, H * c.v_head_dim});
  } else if (c.attention == AttentionKind::V4) {
    const int64_t hd = c.head_dim, G = c.v4->o_groups, ol = c.v4->o_lora_rank;
    q_a_proj.resize({c.q_lora_rank, d});
    q_a_layernorm.resize({c.q_lora_rank});
    q_b_proj.resize({H * hd, c.q_lora_rank});
    wkv.resize({hd, d});
    kv_norm.resize({hd});
    wo_a.resize({G * ol, H * hd / G});
    wo_b.resize({d, G * ol});
    attn_sink.resize({H});
  } else {
    const int64_t hd = c.head_dim, KV = c.num_key_value_heads;
    q_proj.resize({H * hd, d});
    k_proj.resize({KV * hd, d});
    v_proj.resize({KV * hd, d});
    o_proj.resize({d, H * hd});
  }
}

void AttentionParams::visit(const std::string& prefix, const ParamVisitor& f) {
  auto visit_if = [&](const char* name, Tensor& t, const ParamRole& role) {
    if (!t.empty()) f(prefix + name + ".weight", t, role);
  };
  using namespace param_role;
  if (!wkv.empty()) {  // V4, in the release's names (deepseek-v4.md §6.1)
    visit_if("wq_a", q_a_proj, kMatrix);
    visit_if("q_norm", q_a_layernorm, kNormScale);
    visit_if("wq_b", q_b_proj, kMatrix);
    visit_if("wkv", wkv, kMatrix);
    visit_if("kv_norm", kv_norm, kNormScale);
    visit_if("wo_a", wo_a, kMatrix);
    visit_if("wo_b", wo_b, kOutputMatrix);
    f(prefix + "attn_sink", attn_sink, kBias);  // a logit per head: starts at 0, no decay
    return;
  }
  visit_if("q_proj", q_proj, kMatrix);
  visit_if("q_a_proj", q_a_proj, kMatrix);
  visit_if("q_a_layernorm", q_a_layernorm, kNormScale);
  visit_if("q_b_proj", q_b_proj, kMatrix);
  visit_if("kv_a_proj_with_mqa", kv_a_proj_with_mqa, kMatrix);
  visit_if("kv_a_layernorm", kv_a_layernorm, kNormScale);
  visit_if("kv_b_proj", kv_b_proj, kMatrix);
  visit_if("k_proj", k_proj, kMatrix);
  visit_if("v_proj", v_proj, kMatrix);
  visit_if("o_proj", o_proj, kOutputMatrix);
}

void attention_block_forward(const ModelConfig& cfg, const RopeTable& rope, const AttentionParams& p, const float* x,
                             int64_t batch, int64_t seq_len, AttentionCache& cache, float* y) {
  if (cfg.attention == AttentionKind::MLA)
    mla_forward(cfg, rope, p, x, batch, seq_len, cache, y);
  else if (cfg.attention == AttentionKind::V4)
    v4_attention_forward(cfg, rope, p, x, batch, seq_len, cache, y);
  else
    gqa_forward(cfg, rope, p, x, batch, seq_len, cache, y);
}

void attention_block_cached(const ModelConfig& cfg, const RopeTable& rope, const AttentionParams& p, const float* x,
                            int64_t n, const std::vector<AttentionKvCache*>& caches, float* y) {
  if (cfg.attention == AttentionKind::MLA)
    mla_cached(cfg, rope, p, x, n, caches, y);
  else if (cfg.attention == AttentionKind::V4)
    v4_attention_cached(cfg, rope, p, x, n, caches, y);
  else
    gqa_cached(cfg, rope, p, x, n, caches, y);
}

std::vector<int64_t> cached_positions(const std::vector<AttentionKvCache*>& caches, int64_t n) {
  std::vector<int64_t> positions;
  positions.reserve(caches.size() * size_t(n));
  for (const AttentionKvCache* c : caches)
    for (int64_t i = 0; i < n; ++i) positions.push_back(c->length + i);
  return positions;
}

int64_t kv_cache_bytes_per_token(const ModelConfig& c, bool expanded_mla) {
  const int64_t f = int64_t(sizeof(float)), H = c.num_attention_heads;
  if (c.attention == AttentionKind::GQA) return f * 2 * c.num_key_value_heads * c.head_dim;
  if (c.attention == AttentionKind::V4) return f * c.head_dim;  // one shared key (= value) per window slot
  if (expanded_mla) return f * H * (c.qk_head_dim() + c.v_head_dim);
  return f * (c.kv_lora_rank + c.qk_rope_head_dim);
}

void attention_block_backward(const ModelConfig& cfg, const RopeTable& rope, const AttentionParams& p, const float* x,
                              const AttentionCache& cache, const float* dy, int64_t batch, int64_t seq_len,
                              AttentionParams& grads, float* dx) {
  if (cfg.attention == AttentionKind::MLA)
    mla_backward(cfg, rope, p, x, cache, dy, batch, seq_len, grads, dx);
  else if (cfg.attention == AttentionKind::V4)
    v4_attention_backward(cfg, rope, p, x, cache, dy, batch, seq_len, grads, dx);
  else
    gqa_backward(cfg, rope, p, x, cache, dy, batch, seq_len, grads, dx);
}

}  // namespace memoe
