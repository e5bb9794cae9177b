#include "io/config.h"

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "core/error.h"

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
int64_t ModelConfig::rope_dim() const { return attention == AttentionKind::MLA ? qk_rope_head_dim : head_dim; }

double ModelConfig::softmax_scale() const {
  double scale = 1.0 / std::sqrt(double(qk_head_dim()));
  if (yarn_active()) {
    double mscale = 0.1 * rope_scaling->mscale_all_dim * std::log(rope_scaling->factor) + 1.0;
    scale *= mscale * mscale;
  }
  return scale;
}

namespace {

// Reads one key with a type check; a missing or null key keeps the default.
template <typename T>
void get(const json& j, const char* key, T& out, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return;
  try {
    if constexpr (std::is_same_v<T, bool>) {
      MEMOE_CHECK(it->is_boolean(), where, ": key '", key, "' must be a boolean");
      out = it->get<bool>();
    } else if constexpr (std::is_integral_v<T>) {
      MEMOE_CHECK(it->is_number_integer() || (it->is_number_float() && std::floor(it->get<double>()) == it->get<double>()),
                  where, ": key '", key, "' must be an integer");
      out = static_cast<T>(it->get<double>());
      if (it->is_number_integer()) out = it->get<T>();
    } else if constexpr (std::is_floating_point_v<T>) {
      MEMOE_CHECK(it->is_number(), where, ": key '", key, "' must be a number");
      out = it->get<T>();
    } else {
      out = it->get<T>();
    }
  } catch (const json::exception&) {
    fail(where, ": key '", key, "' has the wrong type");
  }
}

void check(bool ok, const std::string& key, const std::string& why) {
  if (!ok) fail("config: ", key, " ", why);
}


}  // namespace

void validate_config(const ModelConfig& c) {
  check(c.vocab_size > 0, "vocab_size", "must be positive");
  check(c.hidden_size > 0, "hidden_size", "must be positive");
  check(c.num_hidden_layers > 0, "num_hidden_layers", "must be positive");
  check(c.num_attention_heads > 0, "num_attention_heads", "must be positive");
  check(c.rms_norm_eps > 0, "rms_norm_eps", "must be positive");
  check(c.rope_theta > 1, "rope_theta", "must be > 1");
  check(c.hc_mult == 1, "hc_mult", "must be 1 (mHC, hc_mult > 1, is not implemented yet)");
  check(c.first_k_dense_replace >= 0, "first_k_dense_replace", "must be >= 0");
  if (c.first_k_dense_replace > 0) check(c.intermediate_size > 0, "intermediate_size", "must be positive");
  bool any_moe = c.first_k_dense_replace < c.num_hidden_layers;
  if (any_moe) {
    check(c.n_routed_experts > 0, "n_routed_experts", "must be positive when MoE layers exist");
    check(c.moe_intermediate_size > 0, "moe_intermediate_size", "must be positive");
    check(c.num_experts_per_tok > 0 && c.num_experts_per_tok <= c.n_routed_experts, "num_experts_per_tok",
          "must be in 1..n_routed_experts (" + std::to_string(c.n_routed_experts) + ")");
    check(c.n_shared_experts >= 0, "n_shared_experts", "must be >= 0");
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
    check(c.q_lora_rank >= 0, "q_lora_rank", "must be >= 0");
    check(c.kv_lora_rank > 0, "kv_lora_rank", "must be positive");
    check(c.qk_nope_head_dim > 0, "qk_nope_head_dim", "must be positive");
    check(c.qk_rope_head_dim > 0 && c.qk_rope_head_dim % 2 == 0, "qk_rope_head_dim", "must be positive and even");
    check(c.v_head_dim > 0, "v_head_dim", "must be positive");
  } else {
    check(c.num_key_value_heads > 0 && c.num_attention_heads % c.num_key_value_heads == 0, "num_key_value_heads",
          "must divide num_attention_heads");
    check(c.head_dim > 0 && c.head_dim % 2 == 0, "head_dim", "must be positive and even");
  }
  if (c.rope_scaling) {
    const YarnConfig& y = *c.rope_scaling;
    check(y.factor >= 1, "rope_scaling.factor", "must be >= 1");
    check(y.original_max_position_embeddings > 0, "rope_scaling.original_max_position_embeddings", "must be positive");
    check(y.beta_fast > y.beta_slow && y.beta_slow > 0, "rope_scaling.beta_fast", "must exceed beta_slow > 0");
  }
  if (c.engram) {
    const EngramConfig& e = *c.engram;
    check(!e.layer_ids.empty(), "engram.layer_ids", "must not be empty");
    std::set<int> seen;
    for (int id : e.layer_ids) {
      check(id >= 0 && id < c.num_hidden_layers, "engram.layer_ids",
            "has layer " + std::to_string(id) + " outside 0..num_hidden_layers-1");
      check(seen.insert(id).second, "engram.layer_ids", "repeats layer " + std::to_string(id));
    }
    check(e.max_ngram_size >= 2, "engram.max_ngram_size", "must be >= 2");
    check(int64_t(e.table_sizes.size()) == e.max_ngram_size - 1, "engram.table_sizes",
          "must have max_ngram_size - 1 entries");
    for (int64_t s : e.table_sizes) check(s >= 2, "engram.table_sizes", "entries must be >= 2");
    check(e.n_head_per_ngram > 0, "engram.n_head_per_ngram", "must be positive");
    check(e.n_embed_per_ngram > 0 && e.n_embed_per_ngram % e.n_head_per_ngram == 0, "engram.n_embed_per_ngram",
          "must be a positive multiple of n_head_per_ngram");
    check(e.kernel_size >= 1, "engram.kernel_size", "must be >= 1");
    check(e.pad_id >= 0 && e.pad_id < c.vocab_size, "engram.pad_id", "must be a token id in 0..vocab_size-1");
    check(e.seed >= 0, "engram.seed", "must be >= 0");
    check(e.table_lr_mult > 0, "engram.table_lr_mult", "must be positive");
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
  ModelConfig c;
  const std::string& w = origin;
  get(j, "vocab_size", c.vocab_size, w);
  get(j, "hidden_size", c.hidden_size, w);
  get(j, "num_hidden_layers", c.num_hidden_layers, w);
  get(j, "intermediate_size", c.intermediate_size, w);
  get(j, "first_k_dense_replace", c.first_k_dense_replace, w);
  get(j, "moe_intermediate_size", c.moe_intermediate_size, w);
  get(j, "n_routed_experts", c.n_routed_experts, w);
  get(j, "num_experts_per_tok", c.num_experts_per_tok, w);
  get(j, "n_shared_experts", c.n_shared_experts, w);
  get(j, "n_group", c.n_group, w);
  get(j, "topk_group", c.topk_group, w);
  std::string scoring = "sigmoid";
  get(j, "scoring_func", scoring, w);
  check(scoring == "sigmoid" || scoring == "softmax", "scoring_func", "must be \"sigmoid\" or \"softmax\"");
  c.scoring_func = scoring == "sigmoid" ? ScoringFunc::Sigmoid : ScoringFunc::Softmax;
  c.norm_topk_prob = c.scoring_func == ScoringFunc::Sigmoid;
  get(j, "norm_topk_prob", c.norm_topk_prob, w);
  get(j, "routed_scaling_factor", c.routed_scaling_factor, w);
  std::string attention = "mla";
  get(j, "attention", attention, w);
  check(attention == "mla" || attention == "gqa", "attention", "must be \"mla\" or \"gqa\"");
  c.attention = attention == "mla" ? AttentionKind::MLA : AttentionKind::GQA;
  get(j, "num_attention_heads", c.num_attention_heads, w);
  c.num_key_value_heads = c.num_attention_heads;
  get(j, "num_key_value_heads", c.num_key_value_heads, w);
  get(j, "head_dim", c.head_dim, w);
  if (c.head_dim == 0 && c.num_attention_heads > 0) c.head_dim = c.hidden_size / c.num_attention_heads;
  if (c.attention == AttentionKind::GQA)
    check(c.head_dim * c.num_attention_heads > 0, "head_dim", "must be positive");
  get(j, "q_lora_rank", c.q_lora_rank, w);
  get(j, "kv_lora_rank", c.kv_lora_rank, w);
  get(j, "qk_nope_head_dim", c.qk_nope_head_dim, w);
  get(j, "qk_rope_head_dim", c.qk_rope_head_dim, w);
  get(j, "v_head_dim", c.v_head_dim, w);
  get(j, "rope_theta", c.rope_theta, w);
  get(j, "max_position_embeddings", c.max_position_embeddings, w);
  get(j, "rms_norm_eps", c.rms_norm_eps, w);
  get(j, "tie_word_embeddings", c.tie_word_embeddings, w);
  get(j, "hc_mult", c.hc_mult, w);
  get(j, "bias_update_speed", c.bias_update_speed, w);
  get(j, "seq_aux_loss_alpha", c.seq_aux_loss_alpha, w);

  if (auto it = j.find("rope_scaling"); it != j.end() && !it->is_null()) {
    check(it->is_object(), "rope_scaling", "must be null or an object");
    std::string type;
    get(*it, "type", type, w);
    if (type.empty()) get(*it, "rope_type", type, w);
    check(type == "yarn", "rope_scaling.type", "must be \"yarn\" (the only scaling memoe implements)");
    YarnConfig y;
    get(*it, "factor", y.factor, w);
    get(*it, "original_max_position_embeddings", y.original_max_position_embeddings, w);
    get(*it, "beta_fast", y.beta_fast, w);
    get(*it, "beta_slow", y.beta_slow, w);
    check(it->contains("mscale_all_dim"), "rope_scaling.mscale_all_dim", "is required");
    check(it->contains("factor"), "rope_scaling.factor", "is required");
    get(*it, "mscale_all_dim", y.mscale_all_dim, w);
    if (it->contains("mscale")) {
      double mscale = 0;
      get(*it, "mscale", mscale, w);
      check(mscale == y.mscale_all_dim, "rope_scaling.mscale", "must equal mscale_all_dim");
    }
    c.rope_scaling = y;
  }
  if (auto it = j.find("engram"); it != j.end() && !it->is_null()) {
    check(it->is_object(), "engram", "must be null or an object");
    EngramConfig e;
    check(it->contains("layer_ids") && (*it)["layer_ids"].is_array(), "engram.layer_ids", "must be a list");
    check(it->contains("table_sizes") && (*it)["table_sizes"].is_array(), "engram.table_sizes", "must be a list");
    for (const json& v : (*it)["layer_ids"]) {
      check(v.is_number_integer(), "engram.layer_ids", "must hold integers");
      e.layer_ids.push_back(v.get<int>());
    }
    for (const json& v : (*it)["table_sizes"]) {
      check(v.is_number_integer(), "engram.table_sizes", "must hold integers");
      e.table_sizes.push_back(v.get<int64_t>());
    }
    get(*it, "max_ngram_size", e.max_ngram_size, w);
    get(*it, "n_embed_per_ngram", e.n_embed_per_ngram, w);
    get(*it, "n_head_per_ngram", e.n_head_per_ngram, w);
    get(*it, "kernel_size", e.kernel_size, w);
    get(*it, "seed", e.seed, w);
    get(*it, "pad_id", e.pad_id, w);
    get(*it, "table_lr_mult", e.table_lr_mult, w);
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
  if (c.rope_scaling) {
    const YarnConfig& y = *c.rope_scaling;
    j["rope_scaling"] = {{"type", "yarn"},
                         {"factor", y.factor},
                         {"original_max_position_embeddings", y.original_max_position_embeddings},
                         {"beta_fast", y.beta_fast},
                         {"beta_slow", y.beta_slow},
                         {"mscale", y.mscale_all_dim},
                         {"mscale_all_dim", y.mscale_all_dim}};
  } else {
    j["rope_scaling"] = nullptr;
  }
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
