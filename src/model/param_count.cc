#include "model/param_count.h"

#include <algorithm>
#include <numeric>

#include "kernels/engram_hash.h"

namespace memoe {

namespace {

int64_t attention_params(const ModelConfig& c) {
  const int64_t d = c.hidden_size, H = c.num_attention_heads;
  if (c.attention == AttentionKind::GQA) {
    const int64_t hd = c.head_dim, KV = c.num_key_value_heads;
    return d * H * hd + 2 * d * KV * hd + H * hd * d;
  }
  const int64_t dqk = c.qk_head_dim(), ql = c.q_lora_rank, kvl = c.kv_lora_rank;
  int64_t n = ql == 0 ? d * H * dqk : d * ql + ql + ql * H * dqk;
  n += d * (kvl + c.qk_rope_head_dim) + kvl + kvl * H * (c.qk_nope_head_dim + c.v_head_dim);
  n += H * c.v_head_dim * d;
  return n;
}

int64_t swiglu_params(int64_t d, int64_t width) { return 3 * d * width; }

// Engram parameters of one layer other than its table.
int64_t engram_dense_params(const ModelConfig& c) {
  const EngramConfig& e = *c.engram;
  const int64_t d = c.hidden_size, E = e.embed_dim();
  return 2 * (d * E + d) + 2 * d + d * e.kernel_size + d;
}

}  // namespace

ParamCount count_params(const ModelConfig& c, int64_t seq_len) {
  if (c.is_v4()) return count_v4_params(c, seq_len);
  const int64_t d = c.hidden_size, V = c.vocab_size;
  ParamCount pc;
  pc.embedding = V * d * (c.tie_word_embeddings ? 1 : 2);
  int64_t total = pc.embedding + d, active = pc.embedding + d;
  int64_t active_matmul = V * d;  // the LM head (tied or not, one matmul)
  pc.bf16_copies = V * d;         // the LM head's (param_role's bf16_copy)
  double attention_flops = 0;
  const double context = (double(seq_len) + 1.0) / 2.0;  // mean causal context

  std::vector<std::vector<int64_t>> primes;
  if (c.engram)
    primes = engram_table_primes(c.engram->layer_ids, c.engram->max_ngram_size, c.engram->n_head_per_ngram,
                                 c.engram->table_sizes);
  pc.head_forward_flops = 2.0 * double(active_matmul);
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const int64_t matmul_before = active_matmul;
    const double attention_before = attention_flops;
    const int64_t attn = attention_params(c);
    total += 2 * d + attn;
    active += 2 * d + attn;
    const int64_t latent_norms = c.attention == AttentionKind::MLA ? c.q_lora_rank + c.kv_lora_rank : 0;
    pc.bf16_copies += attn - latent_norms;
    active_matmul += attn;
    attention_flops += 2.0 * context * double(c.num_attention_heads) * double(c.qk_head_dim() + c.attn_v_dim());
    if (c.is_moe_layer(l)) {
      const int64_t expert = swiglu_params(d, c.moe_intermediate_size);
      const int64_t shared = swiglu_params(d, int64_t(c.n_shared_experts) * c.moe_intermediate_size);
      const int64_t router = int64_t(c.n_routed_experts) * d;
      total += c.n_routed_experts * expert + shared + router + c.n_routed_experts;
      pc.bf16_copies += c.n_routed_experts * expert + shared;  // not the router's gate
      const int64_t act = c.num_experts_per_tok * expert + shared + router;
      active += act + c.n_routed_experts;
      active_matmul += act;
    } else {
      const int64_t dense = swiglu_params(d, c.intermediate_size);
      total += dense;
      pc.bf16_copies += dense;
      active += dense;
      active_matmul += dense;
    }
    if (c.engram && c.engram->has_layer(l)) {
      const auto& e = *c.engram;
      size_t k = size_t(std::find(e.layer_ids.begin(), e.layer_ids.end(), l) - e.layer_ids.begin());
      const int64_t rows = std::accumulate(primes[k].begin(), primes[k].end(), int64_t{0});
      const int64_t table = rows * e.head_dim();
      const int64_t dense = engram_dense_params(c);
      pc.engram_table += table;
      total += table + dense;
      pc.bf16_copies += 2 * d * e.embed_dim();  // value and key projections
      active += e.embed_dim() + dense;  // one row per (n, head): E values
      active_matmul += dense;
    }
    pc.layer_forward_flops.push_back(2.0 * double(active_matmul - matmul_before) + attention_flops - attention_before);
  }
  pc.total = total;
  pc.active = active;
  pc.active_matmul = active_matmul;
  pc.forward_flops_per_token = 2.0 * double(active_matmul) + attention_flops;
  pc.train_flops_per_token = 3.0 * pc.forward_flops_per_token;
  return pc;
}

double activation_bytes(const ModelConfig& c, int64_t batch, int64_t seq_len, Precision precision) {
  if (c.is_v4()) return v4_activation_bytes(c, batch, seq_len);
  const double N = double(batch) * double(seq_len), d = double(c.hidden_size), H = double(c.num_attention_heads);
  double attn;  // floats per token saved by one attention block
  if (c.attention == AttentionKind::MLA) {
    const double dqk = double(c.qk_head_dim()), dv = double(c.v_head_dim);
    attn = 2 * H * dqk + 2 * H * dv + H + 2 * double(c.kv_lora_rank) + 1;
    if (c.q_lora_rank > 0) attn += 2 * double(c.q_lora_rank) + 1;
  } else {
    const double hd = double(c.head_dim), KV = double(c.num_key_value_heads);
    attn = 2 * H * hd + 2 * KV * hd + H;
  }
  double per_token = 0;
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    per_token += 4 * d + 2 + attn;  // residual copies, the two normed inputs and their rstd
    if (c.is_moe_layer(l)) {
      const double F = double(c.moe_intermediate_size), k = double(c.num_experts_per_tok);
      per_token += k * (3 * F + 2 * d) + 3 * double(c.n_shared_experts) * F + double(c.n_routed_experts) + 3 * k;
    } else {
      per_token += 3 * double(c.intermediate_size);
    }
    if (c.engram && c.engram->has_layer(l)) {
      const double E = double(c.engram->embed_dim()), T = double(c.engram->tables_per_layer());
      per_token += d + E + 7 * d + 2 * T + 6;  // h_in, rows (int64), gate, value, conv
    }
  }
  per_token += 2 * d + 1 + 2 * double(c.vocab_size);  // final norm, logits and their gradient
  // Backward transients: a handful of [N, d] buffers plus one attention block's gradients.
  per_token += 6 * d + attn;
  if (precision == Precision::bf16) {
    // SwiGLU's h is kept in bf16 (half a float per value)...
    double h_per_token = 0;
    for (int l = 0; l < c.num_hidden_layers; ++l)
      h_per_token += c.is_moe_layer(l) ? double(c.num_experts_per_tok + c.n_shared_experts) * double(c.moe_intermediate_size)
                                       : double(c.intermediate_size);
    per_token -= 0.5 * h_per_token;
    // ... the LM head's dlogits too, instead of in fp32 ...
    per_token -= 0.5 * double(c.vocab_size);
    // ... and the products round their other fp32 operands into two bf16
    // scratch buffers, sized by the widest.
    const double H_qk = H * double(c.qk_head_dim()), H_v = H * double(c.attn_v_dim());
    const double widest = std::max({d, double(c.intermediate_size), double(c.moe_intermediate_size), H_qk, H_v,
                                    double(c.kv_lora_rank + c.qk_rope_head_dim),
                                    H * double(c.qk_nope_head_dim + c.v_head_dim), double(c.q_lora_rank),
                                    c.engram ? double(c.engram->embed_dim()) : 0.0});
    per_token += 2 * 0.5 * widest;
  }
  return per_token * N * 4.0;
}

double training_state_bytes(const ModelConfig& c, int64_t batch, int64_t seq_len, Precision precision) {
  const ParamCount pc = count_params(c, seq_len);
  const double dense = double(pc.total - pc.engram_table);
  double table_grad_rows = 0;
  if (c.engram)
    table_grad_rows = double(c.engram->layer_ids.size()) * double(batch * seq_len) * double(c.engram->embed_dim());
  const double weights = 4.0 * double(pc.total);
  const double grads = 4.0 * (dense + std::min(table_grad_rows * 2.0, double(pc.engram_table)));
  const double adam = 8.0 * double(pc.total);
  const double copies = precision == Precision::bf16 ? 2.0 * double(pc.bf16_copies) : 0.0;
  return weights + copies + grads + adam + activation_bytes(c, batch, seq_len, precision);
}

}  // namespace memoe
