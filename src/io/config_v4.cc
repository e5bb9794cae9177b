#include "io/config_v4.h"

#include <algorithm>
#include <map>
#include <set>

#include "io/config_keys.h"

namespace memoe::config_detail {

namespace {

constexpr int64_t kMaxHcMult = 16;         // V4: 4
constexpr int64_t kMaxSinkhornIters = 1000;  // V4: 20
constexpr int64_t kMaxMtp = 16;            // V4: 1

// DeepSeek's inference/config.json uses inference/model.py's ModelArgs names;
// each maps to one Hugging Face key (the YaRN four fold into rope_scaling).
const std::map<std::string, std::string>& model_args_names() {
  static const std::map<std::string, std::string> names = {
      {"vocab_size", "vocab_size"},
      {"dim", "hidden_size"},
      {"moe_inter_dim", "moe_intermediate_size"},
      {"n_layers", "num_hidden_layers"},
      {"n_hash_layers", "num_hash_layers"},
      {"n_mtp_layers", "num_nextn_predict_layers"},
      {"n_heads", "num_attention_heads"},
      {"n_routed_experts", "n_routed_experts"},
      {"n_shared_experts", "n_shared_experts"},
      {"n_activated_experts", "num_experts_per_tok"},
      {"score_func", "scoring_func"},
      {"route_scale", "routed_scaling_factor"},
      {"swiglu_limit", "swiglu_limit"},
      {"q_lora_rank", "q_lora_rank"},
      {"head_dim", "head_dim"},
      {"rope_head_dim", "qk_rope_head_dim"},
      {"norm_eps", "rms_norm_eps"},
      {"o_groups", "o_groups"},
      {"o_lora_rank", "o_lora_rank"},
      {"window_size", "sliding_window"},
      {"compress_ratios", "compress_ratios"},
      {"compress_rope_theta", "compress_rope_theta"},
      {"rope_theta", "rope_theta"},
      {"index_n_heads", "index_n_heads"},
      {"index_head_dim", "index_head_dim"},
      {"index_topk", "index_topk"},
      {"hc_mult", "hc_mult"},
      {"hc_sinkhorn_iters", "hc_sinkhorn_iters"},
      {"hc_eps", "hc_eps"},
      {"max_seq_len", "max_position_embeddings"},
  };
  return names;
}

// ModelArgs fields that describe storage or the serving process, not the
// model's math: how the weights are stored is read from the tensors
// themselves (their dtypes), and batch limits are the server's.
const std::set<std::string>& model_args_ignored() {
  static const std::set<std::string> keys = {"dtype", "scale_fmt", "expert_dtype", "scale_dtype", "max_batch_size"};
  return keys;
}

// What DeepSeek's ModelArgs defaults to (inference/model.py), in Hugging Face
// names: a key missing from an inference/config.json means this there.
json model_args_defaults() {
  return {{"vocab_size", 129280},         {"hidden_size", 4096},
          {"moe_intermediate_size", 4096}, {"num_hidden_layers", 7},
          {"num_hash_layers", 0},         {"num_nextn_predict_layers", 1},
          {"num_attention_heads", 64},    {"n_routed_experts", 8},
          {"n_shared_experts", 1},        {"num_experts_per_tok", 2},
          {"scoring_func", "sqrtsoftplus"}, {"routed_scaling_factor", 1.0},
          {"swiglu_limit", 0.0},          {"q_lora_rank", 1024},
          {"head_dim", 512},              {"qk_rope_head_dim", 64},
          {"rms_norm_eps", 1e-6},         {"o_groups", 8},
          {"o_lora_rank", 1024},          {"sliding_window", 128},
          {"compress_ratios", {0, 0, 4, 128, 4, 128, 4, 0}},
          {"compress_rope_theta", 40000.0}, {"rope_theta", 10000.0},
          {"index_n_heads", 64},          {"index_head_dim", 128},
          {"index_topk", 512},            {"hc_mult", 4},
          {"hc_sinkhorn_iters", 20},      {"hc_eps", 1e-6},
          {"max_position_embeddings", 4096}};
}

// Translates an inference/config.json into the Hugging Face spelling. Like
// DeepSeek's ModelArgs(**config), an unknown key is refused (a typo would
// otherwise silently keep a default).
json from_model_args(const json& j, const std::string& origin) {
  json hf = model_args_defaults();
  double original_seq_len = 0, rope_factor = 40, beta_fast = 32, beta_slow = 1;
  bool max_seq_len_given = false;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& key = it.key();
    if (model_args_ignored().count(key)) continue;
    auto yarn = [&](const char* name, double& out) {
      if (key != name) return false;
      MEMOE_CHECK(it->is_number(), origin, ": key '", key, "' must be a number, got ", shown(*it));
      out = it->get<double>();
      return true;
    };
    if (yarn("original_seq_len", original_seq_len) || yarn("rope_factor", rope_factor) ||
        yarn("beta_fast", beta_fast) || yarn("beta_slow", beta_slow))
      continue;
    auto name = model_args_names().find(key);
    MEMOE_CHECK(name != model_args_names().end(), origin, ": key '", key,
                "' is not one of DeepSeek-V4's inference/config.json (ModelArgs) keys");
    hf[name->second] = *it;
    max_seq_len_given |= key == "max_seq_len";
  }
  // YaRN is on exactly when original_seq_len > 0 (precompute_freqs_cis), and
  // only on the compressed layers.
  if (original_seq_len > 0) {
    hf["rope_scaling"] = {{"type", "yarn"},
                          {"factor", rope_factor},
                          {"original_max_position_embeddings", original_seq_len},
                          {"beta_fast", beta_fast},
                          {"beta_slow", beta_slow}};
    if (!max_seq_len_given) hf["max_position_embeddings"] = original_seq_len * rope_factor;
  }
  hf["tie_word_embeddings"] = false;
  hf["num_key_value_heads"] = 1;
  return hf;
}

// V4-Flash's Hugging Face config.json: what a key missing from a
// "deepseek_v4" config.json means (as a transformers config class defaults
// to its flagship), except compress_ratios, which defaults to every layer a
// sliding-window one (its length depends on the layer count).
json hf_defaults() {
  return {{"vocab_size", 129280},       {"hidden_size", 4096},
          {"num_hidden_layers", 43},    {"num_attention_heads", 64},
          {"num_key_value_heads", 1},   {"head_dim", 512},
          {"qk_rope_head_dim", 64},     {"q_lora_rank", 1024},
          {"o_lora_rank", 1024},        {"o_groups", 8},
          {"sliding_window", 128},      {"compress_rope_theta", 160000.0},
          {"index_n_heads", 64},        {"index_head_dim", 128},
          {"index_topk", 512},          {"hc_mult", 4},
          {"hc_sinkhorn_iters", 20},    {"hc_eps", 1e-6},
          {"moe_intermediate_size", 2048}, {"n_routed_experts", 256},
          {"n_shared_experts", 1},      {"num_experts_per_tok", 6},
          {"num_hash_layers", 3},       {"scoring_func", "sqrtsoftplus"},
          {"topk_method", "noaux_tc"},  {"norm_topk_prob", true},
          {"routed_scaling_factor", 1.5}, {"swiglu_limit", 10.0},
          {"num_nextn_predict_layers", 1}, {"rms_norm_eps", 1e-6},
          {"rope_theta", 10000.0},      {"max_position_embeddings", 1048576},
          {"tie_word_embeddings", false}};
}

ScoringFunc parse_scoring(const std::string& s) {
  if (s == "sqrtsoftplus") return ScoringFunc::SqrtSoftplus;
  if (s == "sigmoid") return ScoringFunc::Sigmoid;
  check(s == "softmax", "scoring_func", "must be \"sqrtsoftplus\", \"sigmoid\" or \"softmax\"");
  return ScoringFunc::Softmax;
}

const char* scoring_name(ScoringFunc f) {
  switch (f) {
    case ScoringFunc::SqrtSoftplus: return "sqrtsoftplus";
    case ScoringFunc::Sigmoid: return "sigmoid";
    case ScoringFunc::Softmax: return "softmax";
  }
  return "";
}

}  // namespace

bool is_v4_json(const json& j, const std::string& origin) {
  if (auto it = j.find("model_type"); it != j.end() && it->is_string()) {
    const std::string type = it->get<std::string>();
    MEMOE_CHECK(type != "deepseek_v41", origin,
                ": model_type \"deepseek_v41\" (DeepSeek-V4.1: lagged mHC, its Engram, DSpark) is not implemented yet");
    return type == "deepseek_v4";
  }
  // inference/config.json has no model_type; "dim" and "n_layers" are its names.
  return j.contains("dim") && j.contains("n_layers");
}

namespace {

ModelConfig parse_hf(const json& file, const std::string& origin) {
  json j = hf_defaults();
  const bool model_args = !file.contains("model_type");
  const json given = model_args ? from_model_args(file, origin) : file;
  for (auto it = given.begin(); it != given.end(); ++it) j[it.key()] = *it;
  const Keys k(j, origin);

  ModelConfig c;
  c.attention = AttentionKind::V4;
  V4Config v;
  k.get("vocab_size", c.vocab_size);
  k.get("hidden_size", c.hidden_size);
  k.get("num_hidden_layers", c.num_hidden_layers);
  k.get("num_attention_heads", c.num_attention_heads);
  k.get("num_key_value_heads", c.num_key_value_heads);
  k.get("head_dim", c.head_dim);
  k.get("qk_rope_head_dim", c.qk_rope_head_dim);
  k.get("q_lora_rank", c.q_lora_rank);
  k.get("o_lora_rank", v.o_lora_rank);
  k.get("o_groups", v.o_groups);
  k.get("sliding_window", v.sliding_window);
  k.get("compress_rope_theta", v.compress_rope_theta);
  k.get("index_n_heads", v.index_n_heads);
  k.get("index_head_dim", v.index_head_dim);
  k.get("index_topk", v.index_topk);
  k.get("hc_mult", c.hc_mult);
  k.get("hc_sinkhorn_iters", v.hc_sinkhorn_iters);
  k.get("hc_eps", v.hc_eps);
  k.get("moe_intermediate_size", c.moe_intermediate_size);
  k.get("n_routed_experts", c.n_routed_experts);
  k.get("n_shared_experts", c.n_shared_experts);
  k.get("num_experts_per_tok", c.num_experts_per_tok);
  k.get("num_hash_layers", v.num_hash_layers);
  std::string scoring, topk_method = "noaux_tc", act = "silu";
  k.get("scoring_func", scoring);
  c.scoring_func = parse_scoring(scoring);
  k.get("topk_method", topk_method);
  check(topk_method == "noaux_tc", "topk_method", "must be \"noaux_tc\" (V4 routes without group limits)");
  k.get("hidden_act", act);
  check(act == "silu", "hidden_act", "must be \"silu\" (V4's experts are SwiGLU)");
  k.get("norm_topk_prob", c.norm_topk_prob);
  k.get("routed_scaling_factor", c.routed_scaling_factor);
  k.get("swiglu_limit", v.swiglu_limit);
  k.get("num_nextn_predict_layers", v.num_nextn_predict_layers);
  k.get("rms_norm_eps", c.rms_norm_eps);
  k.get("rope_theta", c.rope_theta);
  k.get("max_position_embeddings", c.max_position_embeddings);
  k.get("tie_word_embeddings", c.tie_word_embeddings);
  k.get("bias_update_speed", c.bias_update_speed);
  k.get("seq_aux_loss_alpha", c.seq_aux_loss_alpha);
  check(!j.contains("engram") || j["engram"].is_null(), "engram",
        "is not part of a V4 model (V4.1's production Engram is not implemented yet)");
  // Every V4 layer is MoE, with no group-limited routing.
  c.first_k_dense_replace = 0;
  c.intermediate_size = 0;
  c.n_group = 1;
  c.topk_group = 1;
  c.qk_nope_head_dim = c.head_dim - c.qk_rope_head_dim;
  c.v_head_dim = c.head_dim;
  c.kv_lora_rank = 0;

  if (k.has("compress_ratios")) {
    v.compress_ratios = k.list<int>("compress_ratios");
  }
  const int64_t layers = int64_t(c.num_hidden_layers) + v.num_nextn_predict_layers;
  if (v.compress_ratios.empty()) v.compress_ratios.assign(size_t(std::max<int64_t>(layers, 0)), 0);
  // A list of the backbone alone gives the MTP blocks sliding-window
  // attention, as SGLang does for the next-n layer.
  if (int64_t(v.compress_ratios.size()) == c.num_hidden_layers)
    v.compress_ratios.resize(size_t(std::max<int64_t>(layers, 0)), 0);

  c.rope_scaling = read_yarn(j, origin, YarnSpelling::DeepSeekV4);
  c.v4 = v;
  return c;
}

// "config: hidden_size must ..." -> "config: dim (hidden_size) must ...".
std::string in_model_args_names(std::string message) {
  for (const auto& [args_name, hf_name] : model_args_names()) {
    if (args_name == hf_name) continue;
    for (const std::string& lead : {std::string("config: "), std::string("key '")}) {
      const std::string from = lead + hf_name, to = lead + args_name + " (" + hf_name + ")";
      const size_t at = message.find(from);
      const char next = at == std::string::npos || at + from.size() >= message.size() ? ' ' : message[at + from.size()];
      if (at != std::string::npos && (next == ' ' || next == '\'')) {
        message.replace(at, from.size(), to);
        return message;
      }
    }
  }
  return message;
}

}  // namespace

ModelConfig parse_v4(const json& file, const std::string& origin) {
  const bool model_args = !file.contains("model_type");
  try {
    ModelConfig c = parse_hf(file, origin);
    validate_config(c);
    return c;
  } catch (const Error& e) {
    const std::string what = e.what();
    const std::string message = what.rfind(origin + ": ", 0) == 0 ? what.substr(origin.size() + 2) : what;
    fail(origin, ": ", model_args ? in_model_args_names(message) : message);
  }
}

void validate_v4(const ModelConfig& c) {
  const V4Config& v = *c.v4;
  check_range(c.hc_mult, 1, kMaxHcMult, "hc_mult");
  check_range(v.hc_sinkhorn_iters, 1, kMaxSinkhornIters, "hc_sinkhorn_iters");
  check_finite(v.hc_eps, "hc_eps");
  check(v.hc_eps >= 0 && v.hc_eps < 1, "hc_eps", "must be in [0, 1)");
  check(c.num_key_value_heads == 1, "num_key_value_heads",
        "must be 1: V4 attention has one key-value head, shared by every query head");
  check(c.qk_rope_head_dim > 0 && c.qk_rope_head_dim % 2 == 0, "qk_rope_head_dim", "must be positive and even");
  check(c.head_dim > c.qk_rope_head_dim, "head_dim", "must exceed qk_rope_head_dim (RoPE turns its last dims)");
  check(c.q_lora_rank > 0, "q_lora_rank", "must be positive (V4's query is always low-rank)");
  check_range(v.o_lora_rank, 1, int64_t(1) << 20, "o_lora_rank");
  check(v.o_groups >= 1 && c.num_attention_heads % v.o_groups == 0, "o_groups",
        "= " + std::to_string(v.o_groups) + " must divide num_attention_heads (" +
            std::to_string(c.num_attention_heads) + ")");
  check_range(v.sliding_window, 1, int64_t(1) << 26, "sliding_window");
  check_finite(v.compress_rope_theta, "compress_rope_theta");
  check(v.compress_rope_theta > 1, "compress_rope_theta", "must be > 1");
  check_range(v.num_nextn_predict_layers, 0, kMaxMtp, "num_nextn_predict_layers");
  check_range(v.num_hash_layers, 0, c.num_hidden_layers, "num_hash_layers");
  check_finite(v.swiglu_limit, "swiglu_limit");
  check(v.swiglu_limit >= 0, "swiglu_limit", "must be >= 0 (0: no clamp)");
  const int64_t layers = int64_t(c.num_hidden_layers) + v.num_nextn_predict_layers;
  check(int64_t(v.compress_ratios.size()) == layers, "compress_ratios",
        "has " + std::to_string(v.compress_ratios.size()) + " entries; it needs one per layer (" +
            std::to_string(c.num_hidden_layers) + ") and per MTP block (" +
            std::to_string(v.num_nextn_predict_layers) + ")");
  bool any_indexer = false;
  for (size_t i = 0; i < v.compress_ratios.size(); ++i) {
    const int r = v.compress_ratios[i];
    check(r == 0 || r == 4 || r == 128, "compress_ratios",
          "entry " + std::to_string(i) + " = " + std::to_string(r) + " must be 0, 4 (CSA) or 128 (HCA)");
    any_indexer |= r == 4;
  }
  if (any_indexer) {
    check_range(v.index_n_heads, 1, 4096, "index_n_heads");
    check(v.index_head_dim > c.qk_rope_head_dim, "index_head_dim", "must exceed qk_rope_head_dim");
    check_range(v.index_head_dim, 1, int64_t(1) << 20, "index_head_dim");
    check_range(v.index_topk, 1, int64_t(1) << 26, "index_topk");
  }
  check(c.n_routed_experts > 0, "n_routed_experts", "must be positive (every V4 layer is MoE)");
  check(c.moe_intermediate_size > 0, "moe_intermediate_size", "must be positive");
  check(c.num_experts_per_tok > 0 && c.num_experts_per_tok <= c.n_routed_experts, "num_experts_per_tok",
        "= " + std::to_string(c.num_experts_per_tok) + " must be in 1..n_routed_experts (" +
            std::to_string(c.n_routed_experts) + ")");
  check(c.routed_scaling_factor > 0, "routed_scaling_factor", "must be positive");
}

json v4_to_json(const ModelConfig& c) {
  const V4Config& v = *c.v4;
  json j;
  j["architectures"] = {"DeepseekV4ForCausalLM"};
  j["model_type"] = "deepseek_v4";
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_key_value_heads;
  j["head_dim"] = c.head_dim;
  j["qk_rope_head_dim"] = c.qk_rope_head_dim;
  j["q_lora_rank"] = c.q_lora_rank;
  j["o_lora_rank"] = v.o_lora_rank;
  j["o_groups"] = v.o_groups;
  j["sliding_window"] = v.sliding_window;
  j["compress_ratios"] = v.compress_ratios;
  j["compress_rope_theta"] = v.compress_rope_theta;
  j["index_n_heads"] = v.index_n_heads;
  j["index_head_dim"] = v.index_head_dim;
  j["index_topk"] = v.index_topk;
  j["hc_mult"] = c.hc_mult;
  j["hc_sinkhorn_iters"] = v.hc_sinkhorn_iters;
  j["hc_eps"] = v.hc_eps;
  j["hidden_act"] = "silu";
  j["moe_intermediate_size"] = c.moe_intermediate_size;
  j["n_routed_experts"] = c.n_routed_experts;
  j["n_shared_experts"] = c.n_shared_experts;
  j["num_experts_per_tok"] = c.num_experts_per_tok;
  j["num_hash_layers"] = v.num_hash_layers;
  j["scoring_func"] = scoring_name(c.scoring_func);
  j["topk_method"] = "noaux_tc";
  j["norm_topk_prob"] = c.norm_topk_prob;
  j["routed_scaling_factor"] = c.routed_scaling_factor;
  j["swiglu_limit"] = v.swiglu_limit;
  j["num_nextn_predict_layers"] = v.num_nextn_predict_layers;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["rope_theta"] = c.rope_theta;
  j["rope_scaling"] = yarn_json(c.rope_scaling, YarnSpelling::DeepSeekV4);
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["bias_update_speed"] = c.bias_update_speed;
  j["seq_aux_loss_alpha"] = c.seq_aux_loss_alpha;
  return j;
}

double v4_attention_bound(const ModelConfig& c) {
  const V4Config& v = *c.v4;
  const double d = double(c.hidden_size), H = double(c.num_attention_heads), hd = double(c.head_dim);
  const double ql = double(c.q_lora_rank), ol = double(v.o_lora_rank), G = double(v.o_groups);
  double attention = d * ql + ql + ql * H * hd + d * hd + hd + H * hd / G * G * ol + G * ol * d + H;
  // A CSA layer's compressor (2 x 2·hd x d) and indexer (its q, weights and
  // its own compressor), the most any layer holds.
  const double dI = double(v.index_head_dim), nI = double(v.index_n_heads);
  attention += 4 * hd * d + 8 * hd + hd + nI * dI * ql + nI * d + 4 * dI * d + 8 * dI + dI;
  const double n = double(c.hc_mult);
  return attention + 2 * ((2 + n) * n * (n * d) + (2 + n) * n + 3);
}

}  // namespace memoe::config_detail
