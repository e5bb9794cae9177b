#include "model/model.h"

#include <algorithm>
#include <chrono>

#include "core/error.h"
#include "kernels/cross_entropy.h"
#include "kernels/elementwise.h"
#include "kernels/embedding.h"
#include "kernels/linear.h"
#include "kernels/norm.h"
#include "model/part_clock.h"
#include "model/rope.h"

namespace memoe {

void require_engine_support(const ModelConfig& cfg) {
  if (!cfg.v4) return;
  const std::vector<int>& ratios = cfg.v4->compress_ratios;
  for (size_t i = 0; i < ratios.size(); ++i)
    if (ratios[i] != 0)
      fail("config: compress_ratios[", i, "] = ", ratios[i], ": compressed attention (",
           ratios[i] == 4 ? "CSA, ratio 4" : "HCA, ratio 128",
           ") is not implemented yet; memoe runs V4 models whose compress_ratios are all 0 (sliding-window attention)");
}

void ModelParams::allocate(const ModelConfig& cfg, const std::vector<int64_t>& engram_rows, bool is_gradient) {
  require_engine_support(cfg);
  const int64_t d = cfg.hidden_size, V = cfg.vocab_size;
  embed_tokens.resize({V, d});
  norm.resize({d});
  if (!cfg.tie_word_embeddings) lm_head.resize({V, d});
  v4_names = cfg.is_v4();
  const bool mhc = uses_mhc(cfg);
  hc_head = MhcParams{};
  if (mhc) hc_head.allocate(cfg.hc_mult, d, true);
  layers.assign(size_t(cfg.num_hidden_layers), LayerParams{});
  for (int i = 0; i < cfg.num_hidden_layers; ++i) {
    LayerParams& l = layers[size_t(i)];
    l.input_layernorm.resize({d});
    l.post_attention_layernorm.resize({d});
    if (mhc) {
      l.hc_attn.allocate(cfg.hc_mult, d, false);
      l.hc_ffn.allocate(cfg.hc_mult, d, false);
    }
    l.attn.allocate(cfg);
    l.is_moe = cfg.is_moe_layer(i);
    if (l.is_moe)
      l.moe.allocate(cfg, i);
    else
      l.mlp.allocate(d, cfg.intermediate_size);
    l.has_engram = cfg.engram && cfg.engram->has_layer(i);
    if (l.has_engram) l.engram.allocate(cfg, engram_rows.at(size_t(i)), !is_gradient);
  }
}

void ModelParams::visit(const ParamVisitor& f) {
  using namespace param_role;
  // memoe's names (spec §6), or the release's for V4 (deepseek-v4.md §6.1).
  const bool r = v4_names;
  if (holds_embedding)
    f(r ? "embed.weight" : "model.embed_tokens.weight", embed_tokens, lm_head.empty() ? kTiedEmbedding : kEmbedding);
  const size_t end = last_layer < 0 ? layers.size() : size_t(last_layer);
  for (size_t i = size_t(first_layer); i < end; ++i) {
    LayerParams& l = layers[i];
    const std::string prefix = (r ? "layers." : "model.layers.") + std::to_string(i) + ".";
    f(prefix + (r ? "attn_norm.weight" : "input_layernorm.weight"), l.input_layernorm, kNormScale);
    f(prefix + (r ? "ffn_norm.weight" : "post_attention_layernorm.weight"), l.post_attention_layernorm, kNormScale);
    if (!l.hc_attn.fn.empty()) {
      l.hc_attn.visit(prefix + "hc_attn_", f, false);
      l.hc_ffn.visit(prefix + "hc_ffn_", f, false);
    }
    l.attn.visit(prefix + (r ? "attn." : "self_attn."), f);
    if (l.is_moe)
      l.moe.visit(prefix + (r ? "ffn." : "mlp."), f);
    else
      l.mlp.visit(prefix + "mlp.", f);
    if (l.has_engram) l.engram.visit(prefix + "engram.", f);
  }
  if (!holds_head) return;
  f(r ? "norm.weight" : "model.norm.weight", norm, kNormScale);
  if (!lm_head.empty()) f(r ? "head.weight" : "lm_head.weight", lm_head, kMatrix);
  if (!hc_head.fn.empty()) hc_head.visit("hc_head_", f, true);
}

int layer_of_param(const std::string& name) {
  for (const char* lead : {"model.layers.", "layers."})
    if (name.rfind(lead, 0) == 0) return std::stoi(name.substr(std::string(lead).size()));
  return -1;
}

bool is_embedding_param(const std::string& name) {
  return name == "model.embed_tokens.weight" || name == "embed.weight";
}

void ModelParams::hold_layers(int first, int last, bool embedding, bool head) {
  MEMOE_CHECK(0 <= first && first <= last && last <= int(layers.size()), "cannot hold layers ", first, "..", last,
              " of ", layers.size());
  const bool tied = lm_head.empty();
  for (int i = 0; i < int(layers.size()); ++i)
    if (i < first || i >= last) layers[size_t(i)] = LayerParams{};
  first_layer = first;
  last_layer = last;
  holds_embedding = embedding;
  holds_head = head;
  if (!embedding && !(head && tied)) embed_tokens = Tensor();
  if (!head) norm = Tensor(), lm_head = Tensor();
}

void ModelParams::set_precision(Precision p) {
  // A tensor held only in bf16 (a view of a bf16 checkpoint) has nothing to
  // copy from or to: its products run in bf16 either way.
  auto round = [&](const std::string&, Tensor& t, const ParamRole& role) {
    if (!t.has_f32()) return;
    if (p == Precision::bf16 && role.bf16_copy)
      to_bf16(t.data(), t.numel(), t.bf16_storage());
    else
      t.drop_bf16();
  };
  visit(round);
  if (head_copy_of_embedding()) round("", embed_tokens, param_role::kTiedEmbedding);
}

void ModelParams::refresh_bf16_copies() {
  auto refresh = [](const std::string&, Tensor& t) {
    if (t.has_bf16_copy()) to_bf16(t.data(), t.numel(), t.bf16_storage());
  };
  visit(refresh);
  if (head_copy_of_embedding()) refresh("", embed_tokens);
}

void ModelParams::hold_experts(int begin, int end) {
  for (LayerParams& l : layers)
    if (l.is_moe) l.moe.hold_experts(begin, end);
}

void ModelParams::visit_sparse_grads(const SparseRowGradVisitor& f) {
  for (size_t i = 0; i < layers.size(); ++i)
    if (layers[i].has_engram) layers[i].engram.visit_sparse_grads("model.layers." + std::to_string(i) + ".engram.", f);
}

void ModelParams::zero() {
  visit([](const std::string&, Tensor& t) { t.zero(); });
  if (head_copy_of_embedding()) embed_tokens.zero();  // a gradient struct's: the tied head's part
  for (LayerParams& l : layers) {
    l.engram.embedding_grad.rows.clear();
    l.engram.embedding_grad.grad.clear();
  }
}

int64_t Model::compressed_vocab() const {
  return token_map.empty() ? config.vocab_size : *std::max_element(token_map.begin(), token_map.end()) + 1;
}

std::vector<int64_t> Model::engram_rows() const {
  std::vector<int64_t> rows(size_t(config.num_hidden_layers), 0);
  for (size_t i = 0; i < engram_hash.size() && i < rows.size(); ++i)
    if (!engram_hash[i].primes.empty()) rows[i] = engram_hash[i].table_rows();
  return rows;
}

ModelParams Model::make_gradients() const {
  ModelParams g;
  g.allocate(config, engram_rows(), true);
  if (params.last_layer >= 0)
    g.hold_layers(params.first_layer, params.last_layer, params.holds_embedding, params.holds_head);
  for (size_t l = 0; l < g.layers.size(); ++l)
    if (g.layers[l].is_moe) g.layers[l].moe.hold_experts(params.layers[l].moe.expert_begin, params.layers[l].moe.expert_end);
  return g;
}

void check_token_ids(const ModelConfig& cfg, const int64_t* ids, int64_t count) {
  for (int64_t i = 0; i < count; ++i)
    MEMOE_CHECK(ids[i] >= 0 && ids[i] < cfg.vocab_size, "token id ", ids[i], " at position ", i,
                " is outside the vocabulary 0..", cfg.vocab_size - 1);
}

std::vector<int64_t> next_token_targets(const int64_t* ids, int64_t batch, int64_t seq_len) {
  std::vector<int64_t> t(size_t(batch * seq_len), -1);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t i = 0; i + 1 < seq_len; ++i) t[size_t(b * seq_len + i)] = ids[b * seq_len + i + 1];
  return t;
}

const char* PartTimes::name(int part) {
  static const char* names[kParts] = {"embed", "engram", "attention", "dense ffn", "moe", "head+loss", "mhc"};
  return names[part];
}

namespace {

using Lap = PartClock;

}  // namespace

const Tensor& lm_head_weight(const Model& m) {
  return m.config.tie_word_embeddings ? m.params.embed_tokens : m.params.lm_head;
}

namespace {

void check_layer_range(const ModelConfig& cfg, int first, int last) {
  MEMOE_CHECK(0 <= first && first <= last && last <= cfg.num_hidden_layers, "layers ", first, "..", last,
              " are not a range of the model's ", cfg.num_hidden_layers);
}

}  // namespace

Tensor& layer_input(const Model& m, ModelState& st, int layer) {
  if (layer == m.config.num_hidden_layers) return st.h_final;
  LayerState& s = st.layers.at(size_t(layer));
  return m.params.layers[size_t(layer)].has_engram ? s.h_in : s.h_mid;
}

void model_begin(const Model& m, const int64_t* ids, int64_t batch, int64_t seq_len, ModelState& st) {
  const ModelConfig& cfg = m.config;
  const int64_t N = batch * seq_len;
  MEMOE_CHECK(batch > 0 && seq_len > 0, "empty batch");
  check_token_ids(cfg, ids, N);
  st.batch = batch;
  st.seq_len = seq_len;
  if (st.rope.seq_len < seq_len) st.rope = make_model_rope_table(cfg, seq_len);
  MEMOE_CHECK(!cfg.is_v4() || (m.params.first_layer == 0 && m.params.last_layer < 0),
              "pipeline stages of DeepSeek-V4 models (their residual is hc_mult streams) are not in the engine yet");
  st.ids.assign(ids, ids + N);
  st.compressed_ids.resize(size_t(N));
  remap_ids(ids, N, m.token_map.empty() ? nullptr : m.token_map.data(), st.compressed_ids.data());
  st.layers.resize(size_t(cfg.num_hidden_layers));
  st.aux_loss = 0.0;
}

void embed_forward(const Model& m, ModelState& st) {
  Lap lap;
  const int64_t N = st.batch * st.seq_len, d = m.config.hidden_size;
  if (uses_mhc(m.config)) {
    v4_embed_forward(m, st);
  } else {
    Tensor& h = layer_input(m, st, 0);
    h.ensure({N, d});
    embedding_forward(m.params.embed_tokens, st.ids.data(), N, d, h.data());
  }
  lap(st.times.forward[PartTimes::Embed]);
}

void layers_forward(const Model& m, int first, int last, ModelState& st) {
  const ModelConfig& cfg = m.config;
  check_layer_range(cfg, first, last);
  const int64_t batch = st.batch, seq_len = st.seq_len, N = batch * seq_len, d = cfg.hidden_size;
  Lap lap;
  double* ft = st.times.forward;
  // The residual stream lives in the tensors the backward pass keeps: each
  // residual add writes straight into the next one (no working copy).
  Tensor branch({N, d});
  for (int li = first; li < last; ++li) {
    const LayerParams& p = m.params.layers[size_t(li)];
    LayerState& s = st.layers[size_t(li)];
    if (uses_mhc(cfg)) {
      v4_layer_forward(m, li, st);  // times its own parts
      lap.restart();
      continue;
    }
    if (p.has_engram) {
      engram_forward(cfg, m.engram_hash[size_t(li)], p.engram, s.h_in.data(), st.compressed_ids.data(), batch,
                     seq_len, s.engram, branch.data(), m.engram_row_source.get(), li);
      s.h_mid.ensure({N, d});
      add(s.h_in.data(), branch.data(), N * d, s.h_mid.data());
      lap(ft[PartTimes::Engram]);
    } else {
      s.h_in = Tensor();
    }
    s.x_attn.ensure({N, d});
    s.rstd_attn.ensure({N});
    rmsnorm_forward(s.h_mid.data(), p.input_layernorm.data(), float(cfg.rms_norm_eps), N, d, s.x_attn.data(),
                    s.rstd_attn.data());
    attention_block_forward(cfg, st.rope, p.attn, s.x_attn.data(), batch, seq_len, s.attn, branch.data());
    s.h_attn.ensure({N, d});
    add(s.h_mid.data(), branch.data(), N * d, s.h_attn.data());
    lap(ft[PartTimes::Attention]);
    s.x_ffn.ensure({N, d});
    s.rstd_ffn.ensure({N});
    rmsnorm_forward(s.h_attn.data(), p.post_attention_layernorm.data(), float(cfg.rms_norm_eps), N, d,
                    s.x_ffn.data(), s.rstd_ffn.data());
    if (p.is_moe) {
      moe_forward(cfg, p.moe, s.x_ffn.data(), batch, seq_len, s.moe, branch.data(), m.expert_dispatch.get(), li,
                  st.ids.data());
      st.aux_loss += s.moe.aux_loss;
    } else {
      swiglu_ffn_forward(p.mlp, s.x_ffn.data(), N, s.mlp, branch.data());
    }
    Tensor& out = layer_input(m, st, li + 1);
    out.ensure({N, d});
    add(s.h_attn.data(), branch.data(), N * d, out.data());
    lap(ft[p.is_moe ? PartTimes::MoE : PartTimes::DenseFfn]);
  }
}

void head_forward(const Model& m, ModelState& st) {
  const ModelConfig& cfg = m.config;
  const int64_t N = st.batch * st.seq_len, d = cfg.hidden_size, V = cfg.vocab_size;
  Lap lap;
  st.final_out.ensure({N, d});
  st.final_rstd.ensure({N});
  if (uses_mhc(cfg)) v4_head_collapse_forward(m, st);
  const float* collapsed = uses_mhc(cfg) ? st.hc_head.y.data() : st.h_final.data();
  rmsnorm_forward(collapsed, m.params.norm.data(), float(cfg.rms_norm_eps), N, d, st.final_out.data(),
                  st.final_rstd.data());
  st.logits.ensure({N, V});
  linear_forward(st.final_out.data(), lm_head_weight(m), nullptr, N, d, V, st.logits.data());
  lap(st.times.forward[PartTimes::Head]);
}

void model_forward(const Model& m, const int64_t* ids, int64_t batch, int64_t seq_len, ModelState& st) {
  model_begin(m, ids, batch, seq_len, st);
  embed_forward(m, st);
  layers_forward(m, 0, m.config.num_hidden_layers, st);
  head_forward(m, st);
}

double head_loss_and_grad(const Model& m, const int64_t* targets, ModelState& st, ModelParams* grads, Tensor& dh,
                          const GradientReadyHook& on_ready) {
  const ModelConfig& cfg = m.config;
  const int64_t N = st.batch * st.seq_len, d = cfg.hidden_size, V = cfg.vocab_size;
  for (int64_t i = 0; i < N; ++i)
    MEMOE_CHECK(targets[i] >= -1 && targets[i] < V, "target id ", targets[i], " at position ", i,
                " is outside the vocabulary");
  const bool bf16_head = lm_head_weight(m).bf16() != nullptr;
  if (grads && bf16_head) {
    st.dlogits = Tensor();
    st.dlogits_bf16.resize(size_t(N * V));
  } else if (grads) {
    std::vector<uint16_t>().swap(st.dlogits_bf16);
    st.dlogits.ensure({N, V});
  }
  const double loss = cross_entropy(st.logits.data(), targets, N, V,
                                    grads && !bf16_head ? st.dlogits.data() : nullptr,
                                    grads && bf16_head ? st.dlogits_bf16.data() : nullptr);
  if (!grads) return loss;
  Lap lap;
  Tensor dfinal({N, d});
  dh.ensure({N, d});
  ModelParams& g = *grads;
  float* dlm = cfg.tie_word_embeddings ? g.embed_tokens.data() : g.lm_head.data();
  const ActivationMatrix dlogits = bf16_head ? ActivationMatrix(st.dlogits_bf16.data()) : st.dlogits.data();
  linear_backward(dlogits, st.final_out.data(), lm_head_weight(m), N, d, V, dfinal.data(), dlm, nullptr);
  if (uses_mhc(cfg)) {
    Tensor dcollapsed({N, d});
    rmsnorm_backward(dfinal.data(), st.hc_head.y.data(), m.params.norm.data(), st.final_rstd.data(), N, d,
                     dcollapsed.data(), g.norm.data());
    v4_head_collapse_backward(m, st, g, dcollapsed.data(), dh);
  } else {
    rmsnorm_backward(dfinal.data(), st.h_final.data(), m.params.norm.data(), st.final_rstd.data(), N, d, dh.data(),
                     g.norm.data());
  }
  lap(st.times.backward[PartTimes::Head]);
  // With tied embeddings the head's matrix is the embedding's, final only at the end.
  if (on_ready) on_ready(cfg.num_hidden_layers);
  return loss;
}

void layers_backward(const Model& m, int first, int last, ModelState& st, ModelParams& g, Tensor& dh,
                     const GradientReadyHook& on_ready) {
  const ModelConfig& cfg = m.config;
  check_layer_range(cfg, first, last);
  const int64_t batch = st.batch, seq_len = st.seq_len, N = batch * seq_len, d = cfg.hidden_size;
  Lap lap;
  double* bt = st.times.backward;
  Tensor dx({N, d}), dbranch({N, d});
  for (int li = last - 1; li >= first; --li) {
    const LayerParams& p = m.params.layers[size_t(li)];
    LayerParams& gl = g.layers[size_t(li)];
    LayerState& s = st.layers[size_t(li)];
    if (uses_mhc(cfg)) {
      v4_layer_backward(m, li, st, g, dh);  // times its own parts
      lap.restart();
      if (on_ready) on_ready(li);
      continue;
    }
    // dh is the gradient w.r.t. the residual after this layer.
    dx.zero();
    if (p.is_moe)
      moe_backward(cfg, p.moe, s.x_ffn.data(), s.moe, dh.data(), batch, seq_len, gl.moe, dx.data(),
                   m.expert_dispatch.get(), li);
    else
      swiglu_ffn_backward(p.mlp, s.x_ffn.data(), s.mlp, dh.data(), N, gl.mlp, dx.data());
    rmsnorm_backward(dx.data(), s.h_attn.data(), p.post_attention_layernorm.data(), s.rstd_ffn.data(), N, d,
                     dh.data(), gl.post_attention_layernorm.data());
    lap(bt[p.is_moe ? PartTimes::MoE : PartTimes::DenseFfn]);
    dx.zero();
    attention_block_backward(cfg, st.rope, p.attn, s.x_attn.data(), s.attn, dh.data(), batch, seq_len, gl.attn,
                             dx.data());
    rmsnorm_backward(dx.data(), s.h_mid.data(), p.input_layernorm.data(), s.rstd_attn.data(), N, d, dh.data(),
                     gl.input_layernorm.data());
    lap(bt[PartTimes::Attention]);
    if (p.has_engram) {
      dbranch = dh;  // Engram(h) was added to h: its output gradient is dh
      engram_backward(cfg, p.engram, s.h_in.data(), s.engram, dbranch.data(), batch, seq_len, gl.engram, dh.data());
      lap(bt[PartTimes::Engram]);
    }
    if (on_ready) on_ready(li);
  }
}

void embed_backward(const Model& m, ModelState& st, ModelParams& g, const Tensor& dh,
                    const GradientReadyHook& on_ready) {
  Lap lap;
  if (uses_mhc(m.config))
    v4_embed_backward(m, st, g, dh);
  else
    embedding_backward(dh.data(), st.ids.data(), st.batch * st.seq_len, m.config.hidden_size, g.embed_tokens.data());
  lap(st.times.backward[PartTimes::Embed]);
  if (on_ready) on_ready(-1);
}

double model_loss_and_grad(const Model& m, const int64_t* ids, const int64_t* targets, int64_t batch,
                           int64_t seq_len, ModelState& st, ModelParams* grads, const GradientReadyHook& on_ready) {
  model_forward(m, ids, batch, seq_len, st);
  Tensor dh;
  const double loss = head_loss_and_grad(m, targets, st, grads, dh, on_ready) + st.aux_loss;
  if (!grads) return loss;
  layers_backward(m, 0, m.config.num_hidden_layers, st, *grads, dh, on_ready);
  embed_backward(m, st, *grads, dh, on_ready);
  return loss;
}

}  // namespace memoe
