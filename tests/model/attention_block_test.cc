#include "model/attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "grad_check.h"
#include "model/rope.h"

namespace memoe {
namespace {

using memoe::testing::expect_gradient_matches;
using memoe::testing::random_vector;
using memoe::testing::weighted_sum;

constexpr int64_t kBatch = 2, kSeq = 5;

ModelConfig base_config() {
  ModelConfig c;
  c.vocab_size = 32;
  c.num_hidden_layers = 1;
  c.first_k_dense_replace = 1;
  c.intermediate_size = 8;
  c.rope_theta = 100.0;  // fast rotation, so positions differ visibly at L = 5
  c.max_position_embeddings = 64;
  return c;
}

// MLA with the low-rank q path; v_head_dim differs from the qk width so that
// a mixed-up width fails.
ModelConfig mla_qlora_config() {
  ModelConfig c = base_config();
  c.hidden_size = 16;
  c.num_attention_heads = 2;
  c.q_lora_rank = 8;
  c.kv_lora_rank = 6;
  c.qk_nope_head_dim = 4;
  c.qk_rope_head_dim = 4;
  c.v_head_dim = 3;
  validate_config(c);
  return c;
}

// MLA with a direct q projection and YaRN (which also rescales the softmax).
ModelConfig mla_noq_yarn_config() {
  ModelConfig c = mla_qlora_config();
  c.q_lora_rank = 0;
  c.num_attention_heads = 3;
  c.qk_rope_head_dim = 6;
  YarnConfig y;
  y.factor = 4.0;
  y.original_max_position_embeddings = 32;
  y.mscale_all_dim = 1.0;
  c.rope_scaling = y;
  validate_config(c);
  EXPECT_TRUE(c.yarn_active());
  return c;
}

ModelConfig gqa_config() {
  ModelConfig c = base_config();
  c.attention = AttentionKind::GQA;
  c.hidden_size = 12;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 4;
  validate_config(c);
  return c;
}

// V4 attention: 4 heads of 8 (the last 4 rotary) over one shared key, a
// window of 3 (shorter than kSeq), 2 output groups of rank 6.
ModelConfig v4_config() {
  const std::string json = R"({"model_type": "deepseek_v4", "vocab_size": 32, "hidden_size": 16,
    "num_hidden_layers": 1, "num_attention_heads": 4, "head_dim": 8, "qk_rope_head_dim": 4, "q_lora_rank": 8,
    "o_lora_rank": 6, "o_groups": 2, "sliding_window": 3, "moe_intermediate_size": 8, "n_routed_experts": 4,
    "num_experts_per_tok": 2, "num_hash_layers": 0, "rope_theta": 100.0, "max_position_embeddings": 64,
    "rope_scaling": null})";
  return parse_config(json, "v4 test config");
}

// Weights ~ N(0, 1/fan_in) keep every activation O(1); norm gains near 1.
AttentionParams random_params(const ModelConfig& c, uint32_t seed) {
  AttentionParams p;
  p.allocate(c);
  p.visit("", [&](const std::string&, Tensor& t) {
    if (t.ndim() == 1) {
      std::vector<float> v = random_vector(t.numel(), seed++, 0.2f);
      for (int64_t i = 0; i < t.numel(); ++i) t[i] = 1.0f + v[size_t(i)];
    } else {
      const std::vector<float> v = random_vector(t.numel(), seed++, float(1.0 / std::sqrt(double(t.dim(1)))));
      std::copy(v.begin(), v.end(), t.data());
    }
  });
  return p;
}

std::set<std::string> param_names(AttentionParams& p) {
  std::set<std::string> names;
  p.visit("", [&](const std::string& n, Tensor&) { names.insert(n); });
  return names;
}

void expect_backward_matches_fd(const ModelConfig& cfg, const std::set<std::string>& expected_names) {
  const int64_t N = kBatch * kSeq, d = cfg.hidden_size;
  const RopeTable rope = make_model_rope_table(cfg, kSeq);
  AttentionParams p = random_params(cfg, 100);
  ASSERT_EQ(param_names(p), expected_names);
  std::vector<float> x = random_vector(N * d, 1), r = random_vector(N * d, 2), y(size_t(N * d));
  auto loss = [&] {
    AttentionCache c;
    attention_block_forward(cfg, rope, p, x.data(), kBatch, kSeq, c, y.data());
    return weighted_sum(y.data(), r.data(), N * d);
  };
  AttentionCache cache;
  attention_block_forward(cfg, rope, p, x.data(), kBatch, kSeq, cache, y.data());
  AttentionParams grads;
  grads.allocate(cfg);
  std::vector<float> dx(size_t(N * d), 0.0f);
  attention_block_backward(cfg, rope, p, x.data(), cache, r.data(), kBatch, kSeq, grads, dx.data());

  expect_gradient_matches("dx", x.data(), N * d, dx.data(), loss, 40);
  std::map<std::string, Tensor*> grad_of;
  grads.visit("", [&](const std::string& n, Tensor& t) { grad_of[n] = &t; });
  p.visit("", [&](const std::string& n, Tensor& t) {
    ASSERT_EQ(grad_of.count(n), 1u) << n;
    ASSERT_EQ(grad_of[n]->shape(), t.shape()) << n;
    expect_gradient_matches(n, t.data(), t.numel(), grad_of[n]->data(), loss, 24);
  });
}

TEST(AttentionBlock, MlaWithQLoraBackwardMatchesFiniteDifferences) {
  expect_backward_matches_fd(mla_qlora_config(),
                             {"q_a_proj.weight", "q_a_layernorm.weight", "q_b_proj.weight",
                              "kv_a_proj_with_mqa.weight", "kv_a_layernorm.weight", "kv_b_proj.weight",
                              "o_proj.weight"});
}

TEST(AttentionBlock, MlaDirectQWithYarnBackwardMatchesFiniteDifferences) {
  expect_backward_matches_fd(mla_noq_yarn_config(), {"q_proj.weight", "kv_a_proj_with_mqa.weight",
                                                     "kv_a_layernorm.weight", "kv_b_proj.weight", "o_proj.weight"});
}

TEST(AttentionBlock, V4BackwardMatchesFiniteDifferences) {
  expect_backward_matches_fd(v4_config(), {"wq_a.weight", "q_norm.weight", "wq_b.weight", "wkv.weight",
                                           "kv_norm.weight", "wo_a.weight", "wo_b.weight", "attn_sink"});
}

TEST(AttentionBlock, GqaBackwardMatchesFiniteDifferences) {
  expect_backward_matches_fd(gqa_config(), {"q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight"});
}

// Changing x at position t of sequence 0 must leave that sequence's earlier
// outputs bit-for-bit unchanged, change its outputs from t on, and leave
// sequence 1 alone.
void expect_causal(const ModelConfig& cfg, int64_t window = kSeq) {
  const int64_t N = kBatch * kSeq, d = cfg.hidden_size;
  const RopeTable rope = make_model_rope_table(cfg, kSeq);
  const AttentionParams p = random_params(cfg, 200);
  const std::vector<float> x = random_vector(N * d, 3);
  std::vector<float> y(size_t(N * d));
  AttentionCache cache;
  attention_block_forward(cfg, rope, p, x.data(), kBatch, kSeq, cache, y.data());
  for (int64_t t = 0; t < kSeq; ++t) {
    std::vector<float> x2 = x, y2(size_t(N * d));
    const std::vector<float> bump = random_vector(d, uint32_t(10 + t));
    for (int64_t j = 0; j < d; ++j) x2[size_t(t * d + j)] += bump[size_t(j)];
    attention_block_forward(cfg, rope, p, x2.data(), kBatch, kSeq, cache, y2.data());
    for (int64_t row = 0; row < N; ++row) {
      // Sequence 0, positions t .. t + window - 1 (a sliding window forgets t after).
      const bool may_change = row >= t && row < std::min(kSeq, t + window);
      double diff = 0.0;
      for (int64_t j = 0; j < d; ++j)
        diff = std::max(diff, double(std::fabs(y2[size_t(row * d + j)] - y[size_t(row * d + j)])));
      if (!may_change) {
        EXPECT_EQ(diff, 0.0) << "changing position " << t << " of sequence 0 changed output row " << row;
      } else if (row == t) {
        EXPECT_GT(diff, 1e-3) << "changing position " << t << " did not change its own output";
      } else {
        EXPECT_GT(diff, 0.0) << "changing position " << t << " did not reach the later row " << row;
      }
    }
  }
}

TEST(AttentionBlock, MlaIsCausal) {
  expect_causal(mla_qlora_config());
  expect_causal(mla_noq_yarn_config());
}

TEST(AttentionBlock, GqaIsCausal) { expect_causal(gqa_config()); }

TEST(AttentionBlock, V4SeesOnlyItsWindow) { expect_causal(v4_config(), 3); }

}  // namespace
}  // namespace memoe
