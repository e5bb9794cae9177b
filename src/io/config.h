// ModelConfig: config.json of spec §1 (HF DeepSeek-V3 keys plus attention,
// hc_mult and engram), parsed, defaulted and validated in one place.
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

enum class AttentionKind { MLA, GQA };
enum class ScoringFunc { Sigmoid, Softmax };

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
  // Training-time knobs that travel with the model (not part of the math).
  double bias_update_speed = 1e-3;
  double seq_aux_loss_alpha = 0.0;

  bool is_moe_layer(int layer) const { return layer >= first_k_dense_replace && n_routed_experts > 0; }
  bool yarn_active() const { return rope_scaling && rope_scaling->factor > 1.0; }
  int64_t qk_head_dim() const;  // per-head q/k width
  int64_t attn_v_dim() const;   // per-head v width
  double softmax_scale() const; // incl. YaRN mscale²
  int64_t rope_dim() const;     // rotary width per head
};

// Parses and validates; throws memoe::Error naming the offending key.
ModelConfig parse_config(const std::string& json_text, const std::string& origin);
ModelConfig load_config(const std::string& path);
std::string config_to_json(const ModelConfig& cfg);  // inverse of parse_config
void validate_config(const ModelConfig& cfg);

}  // namespace memoe
