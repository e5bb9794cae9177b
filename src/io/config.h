// ModelConfig: config.json of spec §1 (HF DeepSeek-V3 keys plus attention,
// hc_mult and engram), or DeepSeek-V4's as released in either of its two
// spellings (docs/v4.md), parsed, defaulted and validated in one place.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace memoe {

struct YarnConfig {
  double factor = 1.0;
  int64_t original_max_position_embeddings = 4096;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double mscale_all_dim = 0.0;
};

struct EngramConfig {
  std::vector<int> layer_ids;
  int max_ngram_size = 3;
  std::vector<int64_t> table_sizes;  // one base size per n-gram order 2..N
  int64_t n_embed_per_ngram = 64;
  int n_head_per_ngram = 4;
  int kernel_size = 4;
  int64_t seed = 0;
  int64_t pad_id = 0;
  double table_lr_mult = 5.0;

  int64_t head_dim() const { return n_embed_per_ngram / n_head_per_ngram; }
  int64_t tables_per_layer() const { return int64_t(max_ngram_size - 1) * n_head_per_ngram; }
  int64_t embed_dim() const { return int64_t(max_ngram_size - 1) * n_embed_per_ngram; }
  bool has_layer(int layer) const;
};

// V4: DeepSeek-V4's attention (one shared key-value head, sliding window,
// sink, grouped low-rank output; spec deepseek-v4.md §2).
enum class AttentionKind { MLA, GQA, V4 };
enum class ScoringFunc { Sigmoid, Softmax, SqrtSoftplus };

// What DeepSeek-V4 adds to the shared keys (deepseek-v4.md §1-§4). Present
// exactly when the config is a V4 one (model_type "deepseek_v4", or
// DeepSeek's inference/config.json spelling).
struct V4Config {
  int64_t o_lora_rank = 1024;
  int o_groups = 8;
  int64_t sliding_window = 128;
  // One entry per layer, then one per MTP block: 0 sliding window only,
  // 4 CSA, 128 HCA. Always num_hidden_layers + num_nextn_predict_layers long
  // once parsed (a file that lists only the backbone gives MTP blocks 0).
  std::vector<int> compress_ratios;
  double compress_rope_theta = 160000.0;
  int hc_sinkhorn_iters = 20;
  double hc_eps = 1e-6;
  int num_hash_layers = 3;   // the first layers route by token id (tid2eid)
  double swiglu_limit = 10;  // 0: no clamp
  int num_nextn_predict_layers = 1;
  int index_n_heads = 64;
  int64_t index_head_dim = 128;
  int index_topk = 512;

  bool is_hash_layer(int layer) const { return layer < num_hash_layers; }
  int compress_ratio(int layer) const { return compress_ratios.at(size_t(layer)); }
};

struct ModelConfig {
  int64_t vocab_size = 129280;
  int64_t hidden_size = 7168;
  int num_hidden_layers = 61;
  int64_t intermediate_size = 18432;
  int first_k_dense_replace = 3;
  int64_t moe_intermediate_size = 2048;
  int n_routed_experts = 256;
  int num_experts_per_tok = 8;
  int n_shared_experts = 1;
  int n_group = 8;
  int topk_group = 4;
  ScoringFunc scoring_func = ScoringFunc::Sigmoid;
  bool norm_topk_prob = true;
  double routed_scaling_factor = 2.5;
  AttentionKind attention = AttentionKind::MLA;
  int num_attention_heads = 128;
  int num_key_value_heads = 128;
  int64_t head_dim = 0;  // GQA; 0 in the file means hidden_size / heads
  int64_t q_lora_rank = 1536;
  int64_t kv_lora_rank = 512;
  int64_t qk_nope_head_dim = 128;
  int64_t qk_rope_head_dim = 64;
  int64_t v_head_dim = 128;
  double rope_theta = 10000.0;
  int64_t max_position_embeddings = 4096;
  std::optional<YarnConfig> rope_scaling;
  double rms_norm_eps = 1e-6;
  bool tie_word_embeddings = false;
  int hc_mult = 1;
  std::optional<EngramConfig> engram;
  std::optional<V4Config> v4;
  // Training-time knobs that travel with the model (not part of the math).
  double bias_update_speed = 1e-3;
  double seq_aux_loss_alpha = 0.0;

  bool is_moe_layer(int layer) const { return layer >= first_k_dense_replace && n_routed_experts > 0; }
  bool is_v4() const { return v4.has_value(); }
  bool yarn_active() const { return rope_scaling && rope_scaling->factor > 1.0; }
  int64_t qk_head_dim() const;  // per-head q/k width
  int64_t attn_v_dim() const;   // per-head v width
  double softmax_scale() const; // incl. YaRN mscale²
  int64_t rope_dim() const;     // rotary width per head
};

// Parses and validates; throws memoe::Error naming the offending key.
ModelConfig parse_config(const std::string& json_text, const std::string& origin);
ModelConfig load_config(const std::string& path);
// Inverse of parse_config. A V4 config is written in the Hugging Face
// spelling (model_type "deepseek_v4"); every other one exactly as before.
std::string config_to_json(const ModelConfig& cfg);
void validate_config(const ModelConfig& cfg);

}  // namespace memoe
