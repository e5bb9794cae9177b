#include "io/config.h"

#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <type_traits>
#include <utility>

#include "core/error.h"
#include "io/config_keys.h"
#include "io/config_v4.h"

namespace memoe {

using nlohmann::json;

bool EngramConfig::has_layer(int layer) const {
  for (int id : layer_ids)
    if (id == layer) return true;
  return false;
}

int64_t ModelConfig::qk_head_dim() const {
  return attention == AttentionKind::MLA ? qk_nope_head_dim + qk_rope_head_dim : head_dim;
}
int64_t ModelConfig::attn_v_dim() const { return attention == AttentionKind::MLA ? v_head_dim : head_dim; }
int64_t ModelConfig::rope_dim() const { return attention == AttentionKind::GQA ? head_dim : qk_rope_head_dim; }

double ModelConfig::softmax_scale() const {
  double scale = 1.0 / std::sqrt(double(qk_head_dim()));
  // V4 applies no YaRN mscale (its compressed layers' YaRN only moves frequencies).
  if (yarn_active() && attention != AttentionKind::V4) {
    double mscale = 0.1 * rope_scaling->mscale_all_dim * std::log(rope_scaling->factor) + 1.0;
    scale *= mscale * mscale;
  }
  return scale;
}

using namespace config_detail;

namespace {

// ------------------------------------------------------------------ limits
//
// Sanity bounds on every size, chosen generously (16x to 1000x) above the
// largest preset, configs/v4-1t.json (vocab 129280, hidden 7168, 61 layers,
// widest FFN 18432, 384 experts, 128 heads, context 163840, Engram tables of
// 646400 rows, 32 of them). A typo or a damaged file is refused at once with
// one line instead of being computed with: `memoe params` loops over layers
// and searches one prime per Engram table, and model/param_count.cc sums
// products of these sizes in int64, which the parameter bound below keeps far
// from overflow.
constexpr int64_t kMaxLayers = 1024;                     // num_hidden_layers; v4-1t: 61
constexpr int64_t kMaxVocab = int64_t(1) << 24;          // 16.8 M ids (shards hold uint32); v4-1t: 129280
constexpr int64_t kMaxWidth = int64_t(1) << 20;          // any hidden/FFN/LoRA/head/Engram width; v4-1t: <= 18432
constexpr int64_t kMaxHeads = 4096;                      // attention heads (q or kv); v4-1t: 128
constexpr int64_t kMaxExperts = 16384;                   // routed or shared experts, groups, top-k; v4-1t: 384
constexpr int64_t kMaxPositions = int64_t(1) << 26;      // 67 M tokens of context; v4-1t: 163840
constexpr int64_t kMaxNgram = 16;                        // engram.max_ngram_size; presets: 3
constexpr int64_t kMaxEngramHeads = 256;                 // engram.n_head_per_ngram; v4-1t: 8
constexpr int64_t kMaxKernel = 256;                      // engram.kernel_size; presets: 4
constexpr int64_t kMaxTableSize = int64_t(1) << 32;      // rows of one Engram table; v4-1t: 646400
// layers x (N - 1) x heads, one prime each; v4-1t: 32. Each layer's prime
// search walks past the primes earlier layers took (kernels/engram_hash.cc),
// so the time grows with the square of this: 256 take ~0.2 s, 4096 took 23 s.
constexpr int64_t kMaxEngramTables = 256;
constexpr int64_t kMaxSeed = int64_t(1) << 62;           // engram.seed (plus 10007 x layer stays in int64)
constexpr double kMaxParams = 1125899906842624.0;        // 2^50 ~ 1.1e15 parameters, ~1100x v4-1t's 1.0e12

// An overestimate of the parameter count (the exact one is model/param_count.cc,
// above io), in double so that it cannot overflow: every matrix of attention,
// the widest FFN a layer can have, the router, Engram. Called once every size is
// within its own limit, so each product here is far below 2^63.
double parameter_bound(const ModelConfig& c) {
  const double d = double(c.hidden_size), H = double(c.num_attention_heads);
  double attention;
  if (c.attention == AttentionKind::V4) {
    attention = v4_attention_bound(c);
  } else if (c.attention == AttentionKind::GQA) {
    attention = 2 * d * H * double(c.head_dim) + 2 * d * double(c.num_key_value_heads) * double(c.head_dim);
  } else {
    const double dqk = double(c.qk_nope_head_dim + c.qk_rope_head_dim), dv = double(c.v_head_dim);
    attention = d * H * dqk + double(c.q_lora_rank) * (d + 1 + H * dqk) +
                double(c.kv_lora_rank + c.qk_rope_head_dim) * (d + 1) + double(c.kv_lora_rank) * H * (dqk + dv) +
                H * dv * d;
  }
  const double experts = double(c.n_routed_experts) + double(c.n_shared_experts);
  const double ffn = 3 * d * std::max(double(c.intermediate_size), experts * double(c.moe_intermediate_size)) +
                     double(c.n_routed_experts) * (d + 1);
  double total = double(c.num_hidden_layers) * (attention + ffn + 2 * d) + 2 * double(c.vocab_size) * d + d;
  if (c.engram) {
    const EngramConfig& e = *c.engram;
    double rows = 0;  // the primes sit just above the base sizes
    for (int64_t s : e.table_sizes) rows += double(s) + 1e4;
    const double layers = double(e.layer_ids.size());
    const double embed = double(e.max_ngram_size - 1) * double(e.n_embed_per_ngram);
    total += layers * (rows * double(e.n_embed_per_ngram) + 2 * d * embed + d * double(e.kernel_size) + 8 * d);
  }
  return total;
}

void validate_engram(const ModelConfig& c) {
  const EngramConfig& e = *c.engram;
  check(!e.layer_ids.empty(), "engram.layer_ids", "must not be empty");
  std::set<int> seen;
  for (int id : e.layer_ids) {
    check(id >= 0 && id < c.num_hidden_layers, "engram.layer_ids",
          "has layer " + std::to_string(id) + " outside 0..num_hidden_layers-1");
    check(seen.insert(id).second, "engram.layer_ids", "repeats layer " + std::to_string(id));
  }
  check_range(e.max_ngram_size, 2, kMaxNgram, "engram.max_ngram_size");
  check(int64_t(e.table_sizes.size()) == e.max_ngram_size - 1, "engram.table_sizes",
        "must have max_ngram_size - 1 entries");
  for (int64_t s : e.table_sizes) check_range(s, 2, kMaxTableSize, "engram.table_sizes entry");
  check_range(e.n_head_per_ngram, 1, kMaxEngramHeads, "engram.n_head_per_ngram");
  check_range(e.n_embed_per_ngram, 1, kMaxWidth, "engram.n_embed_per_ngram");
  check(e.n_embed_per_ngram % e.n_head_per_ngram == 0, "engram.n_embed_per_ngram",
        "must be a positive multiple of n_head_per_ngram");
  check(int64_t(e.layer_ids.size()) * e.tables_per_layer() <= kMaxEngramTables, "engram",
        "has " + std::to_string(int64_t(e.layer_ids.size()) * e.tables_per_layer()) + " tables (layers x (max_ngram_size - 1) x n_head_per_ngram), more than " + std::to_string(kMaxEngramTables));
  check_range(e.kernel_size, 1, kMaxKernel, "engram.kernel_size");
  check(e.pad_id >= 0 && e.pad_id < c.vocab_size, "engram.pad_id", "must be a token id in 0..vocab_size-1");
  check_range(e.seed, 0, kMaxSeed, "engram.seed");
  check_finite(e.table_lr_mult, "engram.table_lr_mult");
  check(e.table_lr_mult > 0, "engram.table_lr_mult", "must be positive");
}

}  // namespace

std::optional<YarnConfig> config_detail::read_yarn(const json& config, const std::string& origin, YarnSpelling spelling) {
  auto it = config.find("rope_scaling");
  if (it == config.end() || it->is_null()) return std::nullopt;
  check(it->is_object(), "rope_scaling", "must be null or an object");
  const Keys r(*it, origin, "rope_scaling.");
  std::string type;
  r.get("type", type);
  if (type.empty()) r.get("rope_type", type);
  check(type == "yarn", "rope_scaling.type", "must be \"yarn\" (the only scaling memoe implements)");
  YarnConfig y;
  if (spelling == YarnSpelling::DeepSeekV3) {
    check(r.has("mscale_all_dim"), "rope_scaling.mscale_all_dim", "is required");
    check(r.has("factor"), "rope_scaling.factor", "is required");
  }
  r.get("factor", y.factor);
  r.get("original_max_position_embeddings", y.original_max_position_embeddings);
  r.get("beta_fast", y.beta_fast);
  r.get("beta_slow", y.beta_slow);
  r.get("mscale_all_dim", y.mscale_all_dim);
  if (spelling == YarnSpelling::DeepSeekV4)
    check(y.mscale_all_dim == 0, "rope_scaling.mscale_all_dim",
          "must be 0 or absent: V4 scales attention by head_dim^-0.5 with no YaRN mscale");
  if (r.has("mscale")) {
    double mscale = 0;
    r.get("mscale", mscale);
    check(mscale == y.mscale_all_dim, "rope_scaling.mscale", "must equal mscale_all_dim");
  }
  return y;
}

json config_detail::yarn_json(const std::optional<YarnConfig>& yarn, YarnSpelling spelling) {
  if (!yarn) return nullptr;
  const YarnConfig& y = *yarn;
  json j = {{"type", "yarn"},
            {"factor", y.factor},
            {"original_max_position_embeddings", y.original_max_position_embeddings},
            {"beta_fast", y.beta_fast},
            {"beta_slow", y.beta_slow}};
  if (spelling == YarnSpelling::DeepSeekV3) {
    j["mscale"] = y.mscale_all_dim;
    j["mscale_all_dim"] = y.mscale_all_dim;
  }
  return j;
}

void validate_config(const ModelConfig& c) {
  // Each size within its own limit first; the relations between them after.
  check_range(c.vocab_size, 1, kMaxVocab, "vocab_size");
  check_range(c.hidden_size, 1, kMaxWidth, "hidden_size");
  check_range(c.num_hidden_layers, 1, kMaxLayers, "num_hidden_layers");
  check_range(c.intermediate_size, 0, kMaxWidth, "intermediate_size");
  // More than num_hidden_layers means every layer is dense (HF's default of 3 on a smaller model).
  check_range(c.first_k_dense_replace, 0, kMaxLayers, "first_k_dense_replace");
  check_range(c.moe_intermediate_size, 0, kMaxWidth, "moe_intermediate_size");
  check_range(c.n_routed_experts, 0, kMaxExperts, "n_routed_experts");
  check_range(c.num_experts_per_tok, 0, kMaxExperts, "num_experts_per_tok");
  check_range(c.n_shared_experts, 0, kMaxExperts, "n_shared_experts");
  check_range(c.n_group, 0, kMaxExperts, "n_group");
  check_range(c.topk_group, 0, kMaxExperts, "topk_group");
  check_range(c.num_attention_heads, 1, kMaxHeads, "num_attention_heads");
  check_range(c.num_key_value_heads, 0, kMaxHeads, "num_key_value_heads");
  check_range(c.head_dim, 0, kMaxWidth, "head_dim");
  check_range(c.q_lora_rank, 0, kMaxWidth, "q_lora_rank");
  check_range(c.kv_lora_rank, 0, kMaxWidth, "kv_lora_rank");
  check_range(c.qk_nope_head_dim, 0, kMaxWidth, "qk_nope_head_dim");
  check_range(c.qk_rope_head_dim, 0, kMaxWidth, "qk_rope_head_dim");
  check_range(c.v_head_dim, 0, kMaxWidth, "v_head_dim");
  check_range(c.max_position_embeddings, 1, kMaxPositions, "max_position_embeddings");
  check_finite(c.rms_norm_eps, "rms_norm_eps");
  check(c.rms_norm_eps > 0 && c.rms_norm_eps <= 1, "rms_norm_eps", "must be in (0, 1]");
  check_finite(c.rope_theta, "rope_theta");
  check(c.rope_theta > 1, "rope_theta", "must be > 1");
  check_finite(c.routed_scaling_factor, "routed_scaling_factor");
  check_finite(c.bias_update_speed, "bias_update_speed");
  check(c.bias_update_speed >= 0, "bias_update_speed", "must be >= 0");
  check_finite(c.seq_aux_loss_alpha, "seq_aux_loss_alpha");
  check(c.seq_aux_loss_alpha >= 0, "seq_aux_loss_alpha", "must be >= 0");
  if (c.v4)
    validate_v4(c);
  else
    check(c.hc_mult == 1, "hc_mult", "must be 1 (mHC, hc_mult > 1, is part of the V4 configs: model_type \"deepseek_v4\")");

  if (c.first_k_dense_replace > 0) check(c.intermediate_size > 0, "intermediate_size", "must be positive");
  bool any_moe = c.first_k_dense_replace < c.num_hidden_layers;
  if (any_moe) {
    check(c.n_routed_experts > 0, "n_routed_experts", "must be positive when MoE layers exist");
    check(c.moe_intermediate_size > 0, "moe_intermediate_size", "must be positive");
    check(c.num_experts_per_tok > 0 && c.num_experts_per_tok <= c.n_routed_experts, "num_experts_per_tok",
          "must be in 1..n_routed_experts (" + std::to_string(c.n_routed_experts) + ")");
    check(c.n_group >= 1 && c.n_routed_experts % c.n_group == 0, "n_group", "must divide n_routed_experts");
    check(c.topk_group >= 1 && c.topk_group <= c.n_group, "topk_group", "must be in 1..n_group");
    if (c.n_group > 1) {
      check(c.n_routed_experts / c.n_group >= 2, "n_group", "leaves fewer than 2 experts per group (groups are scored by their top-2)");
      check(c.num_experts_per_tok <= c.topk_group * (c.n_routed_experts / c.n_group), "num_experts_per_tok",
            "exceeds the experts in the topk_group kept groups");
    }
    check(c.routed_scaling_factor > 0, "routed_scaling_factor", "must be positive");
  }
  if (c.attention == AttentionKind::MLA) {
    check(c.kv_lora_rank > 0, "kv_lora_rank", "must be positive");
    check(c.qk_nope_head_dim > 0, "qk_nope_head_dim", "must be positive");
    check(c.qk_rope_head_dim > 0 && c.qk_rope_head_dim % 2 == 0, "qk_rope_head_dim", "must be positive and even");
    check(c.v_head_dim > 0, "v_head_dim", "must be positive");
  } else if (c.attention == AttentionKind::GQA) {
    check(c.num_key_value_heads > 0 && c.num_attention_heads % c.num_key_value_heads == 0, "num_key_value_heads",
          "must divide num_attention_heads");
    check(c.head_dim > 0 && c.head_dim % 2 == 0, "head_dim", "must be positive and even");
  }
  if (c.rope_scaling) {
    const YarnConfig& y = *c.rope_scaling;
    check_finite(y.factor, "rope_scaling.factor");
    check(y.factor >= 1, "rope_scaling.factor", "must be >= 1");
    check_range(y.original_max_position_embeddings, 1, kMaxPositions, "rope_scaling.original_max_position_embeddings");
    check_finite(y.beta_fast, "rope_scaling.beta_fast");
    check_finite(y.beta_slow, "rope_scaling.beta_slow");
    check(y.beta_fast > y.beta_slow && y.beta_slow > 0, "rope_scaling.beta_fast", "must exceed beta_slow > 0");
    check_finite(y.mscale_all_dim, "rope_scaling.mscale_all_dim");
    check(y.mscale_all_dim >= 0, "rope_scaling.mscale_all_dim", "must be >= 0");
  }
  if (c.engram) validate_engram(c);
  const double params = parameter_bound(c);
  if (params > kMaxParams) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.3g", params);
    fail("config: sizes give about ", buf, " parameters, more than the limit of 2^50 (~1.1e15)");
  }
}

ModelConfig parse_config(const std::string& text, const std::string& origin) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    fail(origin, ": not valid JSON (", e.what(), ")");
  }
  MEMOE_CHECK(j.is_object(), origin, ": config must be a JSON object");
  if (is_v4_json(j, origin)) return parse_v4(j, origin);
  ModelConfig c;
  const Keys k(j, origin);
  k.get("vocab_size", c.vocab_size);
  k.get("hidden_size", c.hidden_size);
  k.get("num_hidden_layers", c.num_hidden_layers);
  k.get("intermediate_size", c.intermediate_size);
  k.get("first_k_dense_replace", c.first_k_dense_replace);
  k.get("moe_intermediate_size", c.moe_intermediate_size);
  k.get("n_routed_experts", c.n_routed_experts);
  k.get("num_experts_per_tok", c.num_experts_per_tok);
  k.get("n_shared_experts", c.n_shared_experts);
  k.get("n_group", c.n_group);
  k.get("topk_group", c.topk_group);
  std::string scoring = "sigmoid";
  k.get("scoring_func", scoring);
  check(scoring == "sigmoid" || scoring == "softmax", "scoring_func", "must be \"sigmoid\" or \"softmax\"");
  c.scoring_func = scoring == "sigmoid" ? ScoringFunc::Sigmoid : ScoringFunc::Softmax;
  c.norm_topk_prob = c.scoring_func == ScoringFunc::Sigmoid;
  k.get("norm_topk_prob", c.norm_topk_prob);
  k.get("routed_scaling_factor", c.routed_scaling_factor);
  std::string attention = "mla";
  k.get("attention", attention);
  check(attention == "mla" || attention == "gqa", "attention", "must be \"mla\" or \"gqa\"");
  c.attention = attention == "mla" ? AttentionKind::MLA : AttentionKind::GQA;
  k.get("num_attention_heads", c.num_attention_heads);
  c.num_key_value_heads = c.num_attention_heads;
  // null means "derive it", as in HF configs and reference/config.py.
  k.get("num_key_value_heads", c.num_key_value_heads, Null::Default);
  k.get("head_dim", c.head_dim, Null::Default);
  if (c.head_dim == 0 && c.num_attention_heads > 0) c.head_dim = c.hidden_size / c.num_attention_heads;
  if (auto it = j.find("q_lora_rank"); it != j.end() && it->is_null()) {
    c.q_lora_rank = 0;  // DeepSeek configs write null for "no q LoRA" (reference/config.py agrees)
  } else {
    k.get("q_lora_rank", c.q_lora_rank);
  }
  k.get("kv_lora_rank", c.kv_lora_rank);
  k.get("qk_nope_head_dim", c.qk_nope_head_dim);
  k.get("qk_rope_head_dim", c.qk_rope_head_dim);
  k.get("v_head_dim", c.v_head_dim);
  k.get("rope_theta", c.rope_theta);
  k.get("max_position_embeddings", c.max_position_embeddings);
  k.get("rms_norm_eps", c.rms_norm_eps);
  k.get("tie_word_embeddings", c.tie_word_embeddings);
  k.get("hc_mult", c.hc_mult);
  k.get("bias_update_speed", c.bias_update_speed);
  k.get("seq_aux_loss_alpha", c.seq_aux_loss_alpha);

  c.rope_scaling = read_yarn(j, origin, YarnSpelling::DeepSeekV3);
  if (auto it = j.find("engram"); it != j.end() && !it->is_null()) {
    check(it->is_object(), "engram", "must be null or an object");
    const Keys g(*it, origin, "engram.");
    EngramConfig e;
    e.layer_ids = g.list<int>("layer_ids");
    e.table_sizes = g.list<int64_t>("table_sizes");
    g.get("max_ngram_size", e.max_ngram_size);
    g.get("n_embed_per_ngram", e.n_embed_per_ngram);
    g.get("n_head_per_ngram", e.n_head_per_ngram);
    g.get("kernel_size", e.kernel_size);
    g.get("seed", e.seed);
    g.get("pad_id", e.pad_id);
    g.get("table_lr_mult", e.table_lr_mult);
    c.engram = e;
  }
  try {
    validate_config(c);
  } catch (const Error& e) {
    fail(origin, ": ", e.what());
  }
  return c;
}

ModelConfig load_config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  MEMOE_CHECK(in, "cannot read config ", path);
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_config(ss.str(), path);
}

std::string config_to_json(const ModelConfig& c) {
  if (c.v4) return v4_to_json(c).dump(2) + "\n";
  json j;
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["intermediate_size"] = c.intermediate_size;
  j["first_k_dense_replace"] = c.first_k_dense_replace;
  j["moe_intermediate_size"] = c.moe_intermediate_size;
  j["n_routed_experts"] = c.n_routed_experts;
  j["num_experts_per_tok"] = c.num_experts_per_tok;
  j["n_shared_experts"] = c.n_shared_experts;
  j["n_group"] = c.n_group;
  j["topk_group"] = c.topk_group;
  j["scoring_func"] = c.scoring_func == ScoringFunc::Sigmoid ? "sigmoid" : "softmax";
  j["norm_topk_prob"] = c.norm_topk_prob;
  j["routed_scaling_factor"] = c.routed_scaling_factor;
  j["attention"] = c.attention == AttentionKind::MLA ? "mla" : "gqa";
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_key_value_heads;
  j["head_dim"] = c.head_dim;
  j["q_lora_rank"] = c.q_lora_rank;
  j["kv_lora_rank"] = c.kv_lora_rank;
  j["qk_nope_head_dim"] = c.qk_nope_head_dim;
  j["qk_rope_head_dim"] = c.qk_rope_head_dim;
  j["v_head_dim"] = c.v_head_dim;
  j["rope_theta"] = c.rope_theta;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rope_scaling"] = yarn_json(c.rope_scaling, YarnSpelling::DeepSeekV3);
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["hc_mult"] = c.hc_mult;
  j["bias_update_speed"] = c.bias_update_speed;
  j["seq_aux_loss_alpha"] = c.seq_aux_loss_alpha;
  if (c.engram) {
    const EngramConfig& e = *c.engram;
    j["engram"] = {{"layer_ids", e.layer_ids},         {"max_ngram_size", e.max_ngram_size},
                   {"table_sizes", e.table_sizes},     {"n_embed_per_ngram", e.n_embed_per_ngram},
                   {"n_head_per_ngram", e.n_head_per_ngram}, {"kernel_size", e.kernel_size},
                   {"seed", e.seed},                   {"pad_id", e.pad_id},
                   {"table_lr_mult", e.table_lr_mult}};
  } else {
    j["engram"] = nullptr;
  }
  return j.dump(2) + "\n";
}

}  // namespace memoe
