#include "model/gguf_export.h"

#include <cmath>

#include "core/bf16.h"
#include "core/error.h"

namespace memoe {

namespace {

const std::string kArch = "deepseek2";

std::string key(const std::string& name) { return kArch + "." + name; }

// A tensor's values as float32 (a bf16 view widened).
std::vector<float> values_of(const Tensor& t) {
  std::vector<float> v(size_t(t.numel()));
  if (t.has_f32()) {
    std::copy(t.data(), t.data() + t.numel(), v.begin());
  } else {
    const uint16_t* b = t.bf16();
    MEMOE_CHECK(b != nullptr, "gguf export: a tensor without values");
    for (int64_t i = 0; i < t.numel(); ++i) v[size_t(i)] = bf16_to_float(b[i]);
  }
  return v;
}

class TensorOut {
 public:
  TensorOut(GgufWriter& w, GgufTensorType dtype, GgufExportSummary& summary) : w_(w), dtype_(dtype), s_(summary) {}
  // A vector (norm scale, bias) or the router: f32, as llama.cpp's converter keeps them.
  void f32(const std::string& name, const std::vector<int64_t>& ne, const std::vector<float>& v) {
    add(name, ne, GgufTensorType::F32, v);
  }
  // A matrix of the products: the export's type (q8_0 needs whole blocks of 32 a row).
  void matrix(const std::string& name, const std::vector<int64_t>& ne, const std::vector<float>& v) {
    GgufTensorType t = dtype_;
    if (t == GgufTensorType::Q8_0 && ne[0] % 32 != 0) t = GgufTensorType::F32, ++s_.kept_f32;
    add(name, ne, t, v);
  }
  // MLA's per-head k_b and v_b (3-d, multiplied head by head): f32 unless
  // the export is bf16. llama.cpp's CPU build moves f16 and q8_0 weights to
  // its AMX buffers on machines that have AMX, whose products do not take
  // these: loading aborts (q8_0) or the outputs are wrong (f16).
  void per_head(const std::string& name, const std::vector<int64_t>& ne, const std::vector<float>& v) {
    add(name, ne, dtype_ == GgufTensorType::BF16 ? dtype_ : GgufTensorType::F32, v);
  }
  // A torch Linear weight [out, in]: ne = {in, out}, the same bytes.
  void linear(const std::string& name, const Tensor& t) { matrix(name, {t.dim(1), t.dim(0)}, values_of(t)); }

 private:
  void add(const std::string& name, const std::vector<int64_t>& ne, GgufTensorType t, const std::vector<float>& v) {
    w_.add_tensor(name, ne, t, v.data());
    ++s_.tensors;
    int64_t n = 1;
    for (int64_t d : ne) n *= d;
    s_.bytes += gguf_tensor_bytes(t, n);
  }
  GgufWriter& w_;
  GgufTensorType dtype_;
  GgufExportSummary& s_;
};

// The routed experts' matrices of one kind stacked [X, rows, cols] (ne
// {cols, rows, X}): each expert's row-major matrix after the other.
std::vector<float> stacked(const MoEParams& moe, Tensor SwiGLUParams::*which) {
  std::vector<float> out;
  for (const SwiGLUParams& e : moe.experts) {
    const std::vector<float> v = values_of(e.*which);
    out.insert(out.end(), v.begin(), v.end());
  }
  return out;
}

void add_metadata(GgufWriter& w, const ModelConfig& c) {
  const int64_t Dn = c.qk_nope_head_dim, Dr = c.qk_rope_head_dim, Dv = c.v_head_dim, Rkv = c.kv_lora_rank;
  w.add_string("general.architecture", kArch);
  w.add_string("general.name", "memoe");
  w.add_u32(key("context_length"), uint32_t(c.max_position_embeddings));
  w.add_u32(key("embedding_length"), uint32_t(c.hidden_size));
  w.add_u32(key("block_count"), uint32_t(c.num_hidden_layers));
  w.add_u32(key("feed_forward_length"), uint32_t(c.intermediate_size));
  w.add_u32(key("vocab_size"), uint32_t(c.vocab_size));
  w.add_u32(key("attention.head_count"), uint32_t(c.num_attention_heads));
  // MLA as llama.cpp runs it: one latent "head" of kv_lora + rope keys, the
  // latent itself the values; the per-head widths in the *_mla keys.
  w.add_u32(key("attention.head_count_kv"), 1);
  w.add_u32(key("attention.key_length"), uint32_t(Rkv + Dr));
  w.add_u32(key("attention.value_length"), uint32_t(Rkv));
  w.add_u32(key("attention.key_length_mla"), uint32_t(Dn + Dr));
  w.add_u32(key("attention.value_length_mla"), uint32_t(Dv));
  w.add_u32(key("attention.q_lora_rank"), uint32_t(c.q_lora_rank));
  w.add_u32(key("attention.kv_lora_rank"), uint32_t(Rkv));
  w.add_f32(key("attention.layer_norm_rms_epsilon"), float(c.rms_norm_eps));
  w.add_u32(key("rope.dimension_count"), uint32_t(Dr));
  w.add_f32(key("rope.freq_base"), float(c.rope_theta));
  if (c.yarn_active()) {
    const YarnConfig& y = *c.rope_scaling;
    w.add_string(key("rope.scaling.type"), "yarn");
    w.add_f32(key("rope.scaling.factor"), float(y.factor));
    w.add_u32(key("rope.scaling.original_context_length"), uint32_t(y.original_max_position_embeddings));
    // llama.cpp reads mscale_all_dim back as this / 0.1.
    w.add_f32(key("rope.scaling.yarn_log_multiplier"), float(0.1 * y.mscale_all_dim));
  }
  w.add_u32(key("leading_dense_block_count"), uint32_t(std::min(c.first_k_dense_replace, c.num_hidden_layers)));
  if (c.n_routed_experts > 0) {
    w.add_u32(key("expert_count"), uint32_t(c.n_routed_experts));
    w.add_u32(key("expert_used_count"), uint32_t(c.num_experts_per_tok));
    w.add_u32(key("expert_shared_count"), uint32_t(c.n_shared_experts));
    w.add_u32(key("expert_feed_forward_length"), uint32_t(c.moe_intermediate_size));
    w.add_u32(key("expert_gating_func"), c.scoring_func == ScoringFunc::Softmax ? 1u : 2u);
    w.add_bool(key("expert_weights_norm"), c.norm_topk_prob);
    w.add_f32(key("expert_weights_scale"), float(c.routed_scaling_factor));
    // Keeping every group is no grouping (llama.cpp asserts used < groups).
    if (c.n_group > 1 && c.topk_group < c.n_group) {
      w.add_u32(key("expert_group_count"), uint32_t(c.n_group));
      w.add_u32(key("expert_group_used_count"), uint32_t(c.topk_group));
    }
  }
}

void add_tokenizer(GgufWriter& w, const Tokenizer& tok, int64_t vocab) {
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<int32_t> types;
  // llama.h's llama_token_type: normal 1, unknown 2, control 3, unused 5, byte 6.
  for (int id = 0; id < tok.vocab_size(); ++id) {
    tokens.push_back(tok.piece(id));
    scores.push_back(tok.score(id));
    switch (tok.kind(id)) {
      case Tokenizer::PieceKind::normal: types.push_back(1); break;
      case Tokenizer::PieceKind::unknown: types.push_back(2); break;
      case Tokenizer::PieceKind::control: types.push_back(3); break;
      case Tokenizer::PieceKind::unused: types.push_back(5); break;
      case Tokenizer::PieceKind::byte: types.push_back(6); break;
    }
  }
  // The embedding's rows past the tokenizer's pieces: unused tokens.
  for (int64_t id = tok.vocab_size(); id < vocab; ++id) {
    tokens.push_back("<memoe_unused_" + std::to_string(id) + ">");
    scores.push_back(-1e9f);
    types.push_back(5);
  }
  w.add_string("tokenizer.ggml.model", "llama");
  w.add_strings("tokenizer.ggml.tokens", tokens);
  w.add_f32s("tokenizer.ggml.scores", scores);
  w.add_i32s("tokenizer.ggml.token_type", types);
  w.add_u32("tokenizer.ggml.bos_token_id", uint32_t(tok.bos_id()));
  w.add_u32("tokenizer.ggml.eos_token_id", uint32_t(tok.eos_id()));
  w.add_u32("tokenizer.ggml.unknown_token_id", uint32_t(tok.unk_id()));
  if (tok.pad_id() >= 0) w.add_u32("tokenizer.ggml.padding_token_id", uint32_t(tok.pad_id()));
  // memoe's tokenizer adds no bos and no dummy leading space (io/tokenizer.h).
  w.add_bool("tokenizer.ggml.add_bos_token", false);
  w.add_bool("tokenizer.ggml.add_eos_token", false);
  w.add_bool("tokenizer.ggml.add_space_prefix", false);
}

}  // namespace

std::string gguf_export_problem(const ModelConfig& c) {
  if (c.engram) return "the model has Engram layers, which llama.cpp's deepseek2 has no form for";
  if (c.attention != AttentionKind::MLA) return "the model uses GQA attention; llama.cpp's deepseek2 is MLA only";
  if (c.hc_mult != 1) return "the model has hc_mult " + std::to_string(c.hc_mult) + " residual branches; llama.cpp has one";
  if (c.rms_norm_eps != 1e-6)
    return "rms_norm_eps is " + std::to_string(c.rms_norm_eps) +
           ": llama.cpp applies it to the MLA latent norms too, where memoe (and DeepSeek) fix 1e-6";
  if (c.n_routed_experts > 0 && c.first_k_dense_replace < c.num_hidden_layers && c.n_shared_experts < 1)
    return "the MoE layers have no shared expert; llama.cpp's deepseek2 requires one";
  if (c.n_group > 1 && c.topk_group < c.n_group && c.n_routed_experts / c.n_group < 2)
    return "group-limited routing with fewer than 2 experts a group; llama.cpp scores a group by its top 2";
  if (c.yarn_active() && (c.rope_scaling->beta_fast != 32 || c.rope_scaling->beta_slow != 1))
    return "YaRN with beta_fast " + std::to_string(c.rope_scaling->beta_fast) + " / beta_slow " +
           std::to_string(c.rope_scaling->beta_slow) + "; llama.cpp fixes them at 32 and 1";
  const bool lite_layers =
      c.num_hidden_layers == 26 || c.num_hidden_layers == 27 || (c.num_hidden_layers == 48 && c.vocab_size == 128256);
  if (lite_layers && c.q_lora_rank > 0)
    return "llama.cpp takes a model of " + std::to_string(c.num_hidden_layers) +
           " layers for DeepSeek-V2-Lite and ignores q_lora_rank";
  if (c.qk_nope_head_dim < 1) return "qk_nope_head_dim must be at least 1 for llama.cpp";
  return "";
}

GgufExportSummary export_gguf(const Model& m, const Tokenizer& tok, const std::string& out, GgufTensorType dtype) {
  const ModelConfig& c = m.config;
  const std::string problem = gguf_export_problem(c);
  MEMOE_CHECK(problem.empty(), "cannot export to GGUF: ", problem);
  MEMOE_CHECK(tok.vocab_size() <= c.vocab_size, "cannot export to GGUF: the tokenizer has ", tok.vocab_size(),
              " pieces, the model's vocabulary ", c.vocab_size);
  const ModelParams& p = m.params;
  for (const LayerParams& l : p.layers)
    MEMOE_CHECK(!l.is_moe || l.moe.holds_all_experts(), "cannot export to GGUF: the model holds a shard of its experts");
  GgufWriter w;
  add_metadata(w, c);
  add_tokenizer(w, tok, c.vocab_size);
  GgufExportSummary summary;
  TensorOut t(w, dtype, summary);
  const int64_t d = c.hidden_size, H = c.num_attention_heads;
  const int64_t Dn = c.qk_nope_head_dim, Dv = c.v_head_dim, Rkv = c.kv_lora_rank;
  t.linear("token_embd.weight", p.embed_tokens);
  t.f32("output_norm.weight", {d}, values_of(p.norm));
  if (!c.tie_word_embeddings) t.linear("output.weight", p.lm_head);  // absent: llama.cpp reuses token_embd
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    const LayerParams& l = p.layers[size_t(i)];
    const std::string b = "blk." + std::to_string(i) + ".";
    const AttentionParams& a = l.attn;
    t.f32(b + "attn_norm.weight", {d}, values_of(l.input_layernorm));
    t.f32(b + "ffn_norm.weight", {d}, values_of(l.post_attention_layernorm));
    if (c.q_lora_rank > 0) {
      t.linear(b + "attn_q_a.weight", a.q_a_proj);
      t.f32(b + "attn_q_a_norm.weight", {c.q_lora_rank}, values_of(a.q_a_layernorm));
      t.linear(b + "attn_q_b.weight", a.q_b_proj);
    } else {
      t.linear(b + "attn_q.weight", a.q_proj);
    }
    t.linear(b + "attn_kv_a_mqa.weight", a.kv_a_proj_with_mqa);
    t.f32(b + "attn_kv_a_norm.weight", {Rkv}, values_of(a.kv_a_layernorm));
    // kv_b_proj [H·(nope + v), kv_lora]: head h's first nope rows make its
    // keys, the next v rows its values.
    const std::vector<float> kvb = values_of(a.kv_b_proj);
    std::vector<float> kb(size_t(H * Rkv * Dn)), vb(size_t(H * Dv * Rkv));
    for (int64_t h = 0; h < H; ++h)
      for (int64_t r = 0; r < Rkv; ++r) {
        for (int64_t j = 0; j < Dn; ++j) kb[size_t((h * Rkv + r) * Dn + j)] = kvb[size_t((h * (Dn + Dv) + j) * Rkv + r)];
        for (int64_t j = 0; j < Dv; ++j) vb[size_t((h * Dv + j) * Rkv + r)] = kvb[size_t((h * (Dn + Dv) + Dn + j) * Rkv + r)];
      }
    t.per_head(b + "attn_k_b.weight", {Dn, Rkv, H}, kb);
    t.per_head(b + "attn_v_b.weight", {Rkv, Dv, H}, vb);
    t.linear(b + "attn_output.weight", a.o_proj);
    if (!l.is_moe) {
      t.linear(b + "ffn_gate.weight", l.mlp.gate_proj);
      t.linear(b + "ffn_up.weight", l.mlp.up_proj);
      t.linear(b + "ffn_down.weight", l.mlp.down_proj);
      continue;
    }
    const int64_t X = c.n_routed_experts, Fe = c.moe_intermediate_size;
    t.f32(b + "ffn_gate_inp.weight", {d, X}, values_of(l.moe.gate));
    t.f32(b + "exp_probs_b.bias", {X}, values_of(l.moe.e_score_correction_bias));
    t.matrix(b + "ffn_gate_exps.weight", {d, Fe, X}, stacked(l.moe, &SwiGLUParams::gate_proj));
    t.matrix(b + "ffn_up_exps.weight", {d, Fe, X}, stacked(l.moe, &SwiGLUParams::up_proj));
    t.matrix(b + "ffn_down_exps.weight", {Fe, d, X}, stacked(l.moe, &SwiGLUParams::down_proj));
    t.linear(b + "ffn_gate_shexp.weight", l.moe.shared.gate_proj);
    t.linear(b + "ffn_up_shexp.weight", l.moe.shared.up_proj);
    t.linear(b + "ffn_down_shexp.weight", l.moe.shared.down_proj);
  }
  w.write(out);
  return summary;
}

}  // namespace memoe
