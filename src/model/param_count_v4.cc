// count_params for DeepSeek-V4 configs: every tensor of the release's
// checkpoint (deepseek-v4.md §6.1), layer by layer, the compressed-attention
// layers' compressors and indexers included, and the MTP blocks apart.
#include <algorithm>

#include "model/param_count.h"

namespace memoe {

namespace {

struct Counts {
  int64_t total = 0, active = 0, matmul = 0, bf16 = 0;
  double attention_flops = 0;  // per token, over the mean causal context
};

// A compressor's wkv and wgate [c·D, d], ape [r, c·D] and norm [D]; c = 2
// for the overlapping ratio 4.
int64_t compressor_params(int64_t d, int ratio, int64_t D) {
  const int64_t c = ratio == 4 ? 2 : 1;
  return 2 * c * D * d + int64_t(ratio) * c * D + D;
}

// Mean over the positions t < seq_len of f(t).
template <typename F>
double mean_over_positions(int64_t seq_len, F f) {
  double s = 0;
  for (int64_t t = 0; t < seq_len; ++t) s += f(t);
  return seq_len > 0 ? s / double(seq_len) : 0.0;
}

// One block (backbone layer or MTP block) with compress ratio `ratio`.
Counts block(const ModelConfig& c, int layer, int ratio, int64_t seq_len) {
  const V4Config& v = *c.v4;
  const int64_t d = c.hidden_size, H = c.num_attention_heads, hd = c.head_dim, ql = c.q_lora_rank;
  const int64_t G = v.o_groups, ol = v.o_lora_rank, n = c.hc_mult, m = (2 + n) * n;
  Counts k;
  // Attention: wq_a, q_norm, wq_b, wkv, kv_norm, wo_a, wo_b, attn_sink.
  const int64_t attn_matrices = d * ql + ql * H * hd + d * hd + G * ol * (H * hd / G) + d * G * ol;
  int64_t attn = attn_matrices + ql + hd + H;
  int64_t attn_matmul = attn_matrices;
  double keys = mean_over_positions(seq_len, [&](int64_t t) { return double(std::min<int64_t>(t + 1, v.sliding_window)); });
  double index_flops = 0;
  if (ratio > 0) {
    attn += compressor_params(d, ratio, hd);
    attn_matmul += 2 * (ratio == 4 ? 2 : 1) * hd * d;
    const double blocks = mean_over_positions(seq_len, [&](int64_t t) { return double((t + 1) / ratio); });
    if (ratio == 128) keys += blocks;
  }
  if (ratio == 4) {
    const int64_t nI = v.index_n_heads, dI = v.index_head_dim;
    const int64_t indexer_matrices = nI * dI * ql + nI * d + 4 * dI * d;
    attn += indexer_matrices + compressor_params(d, 4, dI) - 4 * dI * d;
    attn_matmul += indexer_matrices;
    keys += mean_over_positions(seq_len, [&](int64_t t) { return double(std::min<int64_t>((t + 1) / 4, v.index_topk)); });
    index_flops = 2.0 * double(nI * dI) * mean_over_positions(seq_len, [&](int64_t t) { return double((t + 1) / 4); });
  }
  k.attention_flops = 2.0 * keys * double(H) * double(2 * hd) + index_flops;
  // mHC around each sublayer: fn [m, n·d], base [m], scale [3].
  const int64_t mhc = 2 * (m * n * d + m + 3);
  // MoE: the router (gate.weight, and gate.bias on score-routed layers),
  // routed experts and the shared one.
  const int64_t E = c.n_routed_experts, expert = 3 * d * c.moe_intermediate_size;
  const int64_t shared = int64_t(c.n_shared_experts) * expert, router = E * d;
  const int64_t bias = layer >= v.num_hash_layers ? E : 0;
  k.total = 2 * d + attn + mhc + router + bias + E * expert + shared;
  k.active = 2 * d + attn + mhc + router + bias + int64_t(c.num_experts_per_tok) * expert + shared;
  k.matmul = attn_matmul + 2 * m * n * d + router + int64_t(c.num_experts_per_tok) * expert + shared;
  k.bf16 = attn_matmul + E * expert + shared;
  return k;
}

}  // namespace

ParamCount count_v4_params(const ModelConfig& c, int64_t seq_len) {
  const V4Config& v = *c.v4;
  const int64_t d = c.hidden_size, V = c.vocab_size, n = c.hc_mult;
  ParamCount pc;
  pc.embedding = V * d * (c.tie_word_embeddings ? 1 : 2);
  const int64_t head_collapse = n * n * d + n + 1;  // hc_head_fn, hc_head_base, hc_head_scale
  int64_t total = pc.embedding + d + head_collapse, active = total;
  int64_t matmul = V * d + n * n * d;
  pc.bf16_copies = V * d;
  pc.head_forward_flops = 2.0 * double(matmul);
  double attention_flops = 0;
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const Counts k = block(c, l, v.compress_ratio(l), seq_len);
    total += k.total;
    active += k.active;
    matmul += k.matmul;
    pc.bf16_copies += k.bf16;
    attention_flops += k.attention_flops;
    pc.layer_forward_flops.push_back(2.0 * double(k.matmul) + k.attention_flops);
  }
  for (int i = 0; i < v.num_nextn_predict_layers; ++i) {
    const int layer = c.num_hidden_layers + i;
    const Counts k = block(c, layer, v.compress_ratio(layer), seq_len);
    // e_proj, h_proj; enorm, hnorm, norm; its own head collapse.
    const int64_t extra = 2 * d * d + 3 * d + head_collapse;
    pc.mtp += k.total + extra;
    pc.mtp_active += k.active + extra;
    pc.bf16_copies += k.bf16 + 2 * d * d;
  }
  pc.hash_routing_entries = int64_t(v.num_hash_layers) * V * c.num_experts_per_tok;
  pc.total = total + pc.mtp;
  pc.active = active + pc.mtp_active;
  pc.active_matmul = matmul;
  pc.forward_flops_per_token = 2.0 * double(matmul) + attention_flops;
  pc.train_flops_per_token = 3.0 * pc.forward_flops_per_token;
  return pc;
}

double v4_activation_bytes(const ModelConfig& c, int64_t batch, int64_t seq_len) {
  const V4Config& v = *c.v4;
  const double N = double(batch) * double(seq_len), d = double(c.hidden_size), n = double(c.hc_mult);
  const double H = double(c.num_attention_heads), hd = double(c.head_dim), ql = double(c.q_lora_rank);
  const double m = (2 + n) * n, T = double(v.hc_sinkhorn_iters);
  const double F = double(c.moe_intermediate_size), k = double(c.num_experts_per_tok);
  // Floats saved per token by one block: the streams entering each sublayer;
  // each sublayer's mixes, coefficients and Sinkhorn rounds (for their
  // backward), its collapsed input, normed input and rstd; attention's
  // low-rank query, heads, shared key, output and its low-rank groups; the
  // MoE as in the other presets.
  const double streams = 2 * n * d;
  const double mhc = 2 * (m + 2 * n + 2 * T * n * n + 1 + 2 * d + 1);
  const double attn = 2 * ql + 1 + 2 * H * hd + 2 * hd + 1 + double(v.o_groups * v.o_lora_rank) + 2 * H;
  const double moe = k * (3 * F + 2 * d) + 3 * double(c.n_shared_experts) * F + double(c.n_routed_experts) + 3 * k;
  const double layers = double(c.num_hidden_layers + v.num_nextn_predict_layers);
  double per_token = layers * (streams + mhc + attn + moe);
  per_token += v.num_nextn_predict_layers * (4 * d + 2);                    // MTP's normed inputs and e/h terms
  per_token += (1 + v.num_nextn_predict_layers) * (n * d + 2 * d + 1 + 2 * double(c.vocab_size));  // heads
  per_token += 6 * n * d + attn;  // backward transients
  return per_token * N * 4.0;
}

V4CacheBytes v4_cache_bytes(const ModelConfig& c) {
  const V4Config& v = *c.v4;
  V4CacheBytes b;
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const int r = v.compress_ratio(l);
    b.window += 4.0 * double(v.sliding_window) * double(c.head_dim);
    if (r > 0) b.per_token += 4.0 * double(c.head_dim) / r;
    if (r == 4) b.per_token += 4.0 * double(v.index_head_dim) / 4;
  }
  return b;
}

}  // namespace memoe
