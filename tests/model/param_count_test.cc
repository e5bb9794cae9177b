// memoe params against hand counts written from the spec (§8 presets), not
// from the code's own formulas.
#include "model/param_count.h"

#include <gtest/gtest.h>

#include "model/init.h"

#include <string>

namespace memoe {
namespace {

ModelConfig preset(const std::string& name) {
  return load_config(std::string(MEMOE_SOURCE_DIR) + "/configs/" + name + ".json");
}

// v4-1t by hand: d 7168, V 129280, 61 layers (3 dense of width 18432, 58 MoE
// with 384 experts of width 2048, 1 shared, top-8), MLA q_lora 1536, kv_lora
// 512, 128 heads of nope 128 + rope 64, v 128; Engram at 2 layers with 16
// tables of ~646400 rows x 64.
TEST(ParamCount, V4OneTrillionMatchesHandCount) {
  const double d = 7168, V = 129280;
  const double attn = d * 1536 + 1536 + 1536.0 * 128 * 192 + d * 576 + 512 + 512.0 * 128 * 256 + 128.0 * 128 * d;
  const double expert = 3 * d * 2048;
  const double moe_layer = 384 * expert + expert + 384 * d + 384;
  const double dense_layer = 3 * d * 18432;
  const double tables = 2 * 16 * 646400.0 * 64;  // primes sit just above 646400
  const double engram_dense = 2 * (2 * (d * 1024 + d) + 2 * d + 4 * d + d);
  const double total = 2 * V * d + d + 61 * (attn + 2 * d) + 3 * dense_layer + 58 * moe_layer + tables + engram_dense;
  const double active_moe = 9 * expert + 384 * d + 384;
  const double active = 2 * V * d + d + 61 * (attn + 2 * d) + 3 * dense_layer + 58 * active_moe + engram_dense +
                        2 * 1024;

  const ParamCount pc = count_params(preset("v4-1t"), 4096);
  EXPECT_NEAR(double(pc.total), total, 1e-4 * total);
  EXPECT_NEAR(double(pc.active), active, 1e-4 * active);
  EXPECT_NEAR(double(pc.engram_table), tables, 1e-3 * tables);
  // The design targets: 1.0 T total and 37 B active, each within 5 %.
  EXPECT_NEAR(double(pc.total), 1.0e12, 0.05e12);
  EXPECT_NEAR(double(pc.active), 37e9, 0.05 * 37e9);
  EXPECT_NEAR(total, 1.0e12, 0.05e12);
  EXPECT_NEAR(active, 37e9, 0.05 * 37e9);
  // Training is three forward passes; forward is at least 2 FLOPs per active matmul weight.
  EXPECT_DOUBLE_EQ(pc.train_flops_per_token, 3 * pc.forward_flops_per_token);
  EXPECT_GT(pc.forward_flops_per_token, 2 * (active - 2 * V * d));
}

TEST(ParamCount, V4LiteIsAboutTwoHundredBillion) {
  const double d = 5120, V = 102400;
  const double attn = d * 1536 + 1536 + 1536.0 * 128 * 192 + d * 576 + 512 + 512.0 * 128 * 256 + 128.0 * 128 * d;
  const double expert = 3 * d * 1536;
  const double moe_layer = 136 * expert + 2 * expert + 136 * d + 136;
  const double tables = 2 * 16 * 646400.0 * 64;
  const double engram_dense = 2 * (2 * (d * 1024 + d) + 2 * d + 4 * d + d);
  const double total =
      2 * V * d + d + 60 * (attn + 2 * d) + 3 * d * 12288 + 59 * moe_layer + tables + engram_dense;
  const ParamCount pc = count_params(preset("v4-lite-200b"), 4096);
  EXPECT_NEAR(double(pc.total), total, 1e-4 * total);
  EXPECT_NEAR(double(pc.total), 200e9, 0.05 * 200e9);
}

TEST(ParamCount, SmallPresetFitsItsBrief) {
  const ModelConfig cfg = preset("small");
  const ParamCount pc = count_params(cfg, 256);
  EXPECT_GE(pc.total, 10'000'000);
  EXPECT_LE(pc.total, 30'000'000);
  EXPECT_GE(cfg.n_routed_experts, 16);
  ASSERT_TRUE(cfg.engram.has_value());
  EXPECT_EQ(cfg.engram->layer_ids.size(), 2u);
}

TEST(ParamCount, TiedEmbeddingsCountOnce) {
  ModelConfig cfg = preset("tiny");
  const int64_t untied = count_params(cfg, 16).total;
  cfg.tie_word_embeddings = true;
  EXPECT_EQ(untied - count_params(cfg, 16).total, cfg.vocab_size * cfg.hidden_size);
}

// bf16_copies counts exactly the values a bf16 model copies (the roles in
// model/params.h decide), for MLA with and without q-LoRA, GQA, tied and
// untied embeddings; and the bf16 training state adds them at 2 bytes each.
TEST(ParamCount, Bf16CopiesAreTheTensorsThatGetOne) {
  for (const char* name : {"tiny", "small"}) {
    for (int variant = 0; variant < 4; ++variant) {
      ModelConfig cfg = preset(name);
      if (variant == 1) cfg.tie_word_embeddings = !cfg.tie_word_embeddings;
      if (variant == 2) cfg.q_lora_rank = cfg.q_lora_rank > 0 ? 0 : 16;
      if (variant == 3) {
        cfg.attention = AttentionKind::GQA;
        cfg.num_key_value_heads = 1;
        cfg.head_dim = 16;
      }
      Model m = init_model(cfg, 0);
      m.params.set_precision(Precision::bf16);
      int64_t copied = 0;
      m.params.visit([&](const std::string&, Tensor& t) { copied += t.bf16() ? t.numel() : 0; });
      EXPECT_EQ(count_params(cfg, 16).bf16_copies, copied) << name << " variant " << variant;
    }
  }
  const ModelConfig cfg = preset("small");
  const double activations = activation_bytes(cfg, 2, 64, Precision::bf16) - activation_bytes(cfg, 2, 64);
  EXPECT_DOUBLE_EQ(training_state_bytes(cfg, 2, 64, Precision::bf16) - training_state_bytes(cfg, 2, 64),
                   2.0 * double(count_params(cfg, 64).bf16_copies) + activations);
}

}  // namespace
}  // namespace memoe
