// DeepSeek-V4 configs: both of DeepSeek's spellings read as one model, the
// presets count what the release holds, and bad V4 configs are refused in
// one line naming the key.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "core/error.h"
#include "io/config.h"
#include "io/config_files.h"
#include "model/init.h"
#include "model/param_count.h"

namespace memoe {
namespace {

using nlohmann::json;

json preset(const std::string& name) { return io_testing::preset_json(name); }
std::string error_of(const json& j) { return io_testing::parse_error(j); }

// V4-Flash's inference/config.json as DeepSeek ships it (ModelArgs names).
json flash_model_args() {
  json ratios = json::array({0, 0});
  for (int i = 2; i < 42; ++i) ratios.push_back(i % 2 == 0 ? 4 : 128);
  ratios.push_back(4);
  ratios.push_back(0);
  return {{"vocab_size", 129280}, {"dim", 4096}, {"moe_inter_dim", 2048}, {"n_layers", 43}, {"n_hash_layers", 3},
          {"n_heads", 64}, {"n_routed_experts", 256}, {"n_shared_experts", 1}, {"n_activated_experts", 6},
          {"score_func", "sqrtsoftplus"}, {"route_scale", 1.5}, {"swiglu_limit", 10.0}, {"q_lora_rank", 1024},
          {"head_dim", 512}, {"rope_head_dim", 64}, {"o_groups", 8}, {"o_lora_rank", 1024}, {"window_size", 128},
          {"original_seq_len", 65536}, {"rope_theta", 10000}, {"rope_factor", 16}, {"beta_fast", 32},
          {"beta_slow", 1}, {"index_n_heads", 64}, {"index_head_dim", 128}, {"index_topk", 512}, {"hc_mult", 4},
          {"hc_sinkhorn_iters", 20}, {"dtype", "fp8"}, {"scale_fmt", "ue8m0"}, {"expert_dtype", "fp4"},
          {"compress_rope_theta", 160000}, {"compress_ratios", ratios}};
}

TEST(ConfigV4, BothSpellingsOfV4FlashAreOneModel) {
  const ModelConfig hf = parse_config(preset("deepseek-v4-flash").dump(), "config.json");
  const ModelConfig args = parse_config(flash_model_args().dump(), "inference/config.json");
  ASSERT_TRUE(hf.is_v4());
  ASSERT_TRUE(args.is_v4());
  EXPECT_EQ(config_to_json(hf), config_to_json(args));
  EXPECT_EQ(hf.attention, AttentionKind::V4);
  EXPECT_EQ(hf.scoring_func, ScoringFunc::SqrtSoftplus);
  EXPECT_EQ(hf.num_key_value_heads, 1);
  EXPECT_EQ(hf.v4->compress_ratios.size(), 44u);
  EXPECT_EQ(hf.v4->compress_ratio(43), 0);  // the MTP block: sliding window only
  EXPECT_EQ(hf.v4->num_hash_layers, 3);
  EXPECT_DOUBLE_EQ(hf.v4->swiglu_limit, 10.0);
  ASSERT_TRUE(hf.rope_scaling.has_value());
  EXPECT_EQ(hf.rope_scaling->original_max_position_embeddings, 65536);
  EXPECT_DOUBLE_EQ(hf.softmax_scale(), 1.0 / std::sqrt(512.0));  // no YaRN mscale in V4
  EXPECT_EQ(hf.max_position_embeddings, 1048576);
}

TEST(ConfigV4, WrittenConfigReadsBackAsTheSameModel) {
  for (const char* name : {"deepseek-v4-flash", "deepseek-v4-pro", "v4-small"}) {
    const ModelConfig c = parse_config(preset(name).dump(), name);
    const std::string written = config_to_json(c);
    EXPECT_EQ(config_to_json(parse_config(written, "written")), written) << name;
    // The written file is in the release's Hugging Face spelling.
    EXPECT_EQ(json::parse(written)["model_type"], "deepseek_v4") << name;
  }
}

TEST(ConfigV4, OtherPresetsAreWrittenAsBefore) {
  // A memoe config never gains a V4 key: their checkpoints stay byte for byte.
  for (const char* name : {"tiny", "small", "moe-medium", "deepseek-v3", "v4-1t"}) {
    const json written = json::parse(config_to_json(parse_config(preset(name).dump(), name)));
    EXPECT_FALSE(written.contains("model_type")) << name;
    EXPECT_FALSE(written.contains("compress_ratios")) << name;
  }
}

TEST(ConfigV4, ModelArgsMissingKeysMeanDeepSeeksDefaults) {
  // {"dim", "n_layers"} alone is a ModelArgs file: the rest is
  // inference/model.py's defaults (swiglu_limit 0, route_scale 1, 8 entries
  // of compress_ratios for 7 layers and one MTP block).
  const ModelConfig c = parse_config(json{{"dim", 256}, {"n_layers", 7}}.dump(), "inference/config.json");
  EXPECT_EQ(c.hidden_size, 256);
  EXPECT_DOUBLE_EQ(c.v4->swiglu_limit, 0.0);
  EXPECT_DOUBLE_EQ(c.routed_scaling_factor, 1.0);
  EXPECT_EQ(c.v4->num_hash_layers, 0);
  EXPECT_EQ(c.v4->compress_ratios, (std::vector<int>{0, 0, 4, 128, 4, 128, 4, 0}));
  EXPECT_FALSE(c.rope_scaling.has_value());  // original_seq_len 0: no YaRN
  EXPECT_EQ(c.num_experts_per_tok, 2);
}

TEST(ConfigV4, BackboneOnlyRatiosGiveTheMtpBlocksASlidingWindow) {
  json j = preset("v4-small");
  j["compress_ratios"] = {0, 0, 0, 0, 0, 0};
  EXPECT_EQ(parse_config(j.dump(), "c").v4->compress_ratios.size(), 7u);
}

TEST(ConfigV4, BadConfigsAreRefusedInOneLineNamingTheKey) {
  auto with = [](const std::string& key, const json& value) {
    json j = preset("v4-small");
    j[key] = value;
    return error_of(j);
  };
  EXPECT_NE(with("hc_mult", 0).find("hc_mult"), std::string::npos);
  EXPECT_NE(with("o_groups", 3).find("o_groups = 3 must divide num_attention_heads (4)"), std::string::npos);
  EXPECT_NE(with("sliding_window", 0).find("sliding_window"), std::string::npos);
  EXPECT_NE(with("num_experts_per_tok", 17).find("num_experts_per_tok = 17 must be in 1..n_routed_experts (16)"),
            std::string::npos);
  EXPECT_NE(with("num_key_value_heads", 2).find("one key-value head"), std::string::npos);
  EXPECT_NE(with("compress_ratios", json::array({0, 0, 3, 0, 0, 0, 0})).find("entry 2 = 3"), std::string::npos);
  EXPECT_NE(with("compress_ratios", json::array({0, 0})).find("has 2 entries"), std::string::npos);
  EXPECT_NE(with("head_dim", 32).find("head_dim"), std::string::npos);
  EXPECT_NE(with("num_hash_layers", 7).find("num_hash_layers"), std::string::npos);
  EXPECT_NE(with("topk_method", "group_limited_greedy").find("topk_method"), std::string::npos);
  EXPECT_NE(with("scoring_func", "relu").find("scoring_func"), std::string::npos);
  EXPECT_NE(with("swiglu_limit", -1).find("swiglu_limit"), std::string::npos);
  EXPECT_NE(with("engram", json::object()).find("engram"), std::string::npos);
  EXPECT_NE(with("model_type", "deepseek_v41").find("deepseek_v41"), std::string::npos);
  for (const std::string& e : {with("hc_mult", 0), with("o_groups", 3)}) {
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
    EXPECT_EQ(e.rfind("cfg.json: ", 0), 0u) << e;
  }
}

TEST(ConfigV4, ModelArgsErrorsNameTheKeyAsTheFileSpellsIt) {
  json j = flash_model_args();
  j["n_heads"] = 60;  // o_groups 8 no longer divides it
  EXPECT_NE(error_of(j).find("num_attention_heads (60)"), std::string::npos) << error_of(j);
  j = flash_model_args();
  j["dim"] = 0;
  EXPECT_NE(error_of(j).find("config: dim (hidden_size)"), std::string::npos) << error_of(j);
  j = flash_model_args();
  j["n_expert"] = 8;  // a typo DeepSeek's ModelArgs(**config) would refuse too
  EXPECT_NE(error_of(j).find("'n_expert' is not one of"), std::string::npos) << error_of(j);
}

TEST(ConfigV4, PresetsCountWhatTheReleaseHolds) {
  // Every tensor of the release (docs/v4.md); the byte size these counts
  // give with the release's dtypes is its index's total_size exactly.
  const ParamCount flash = count_params(parse_config(preset("deepseek-v4-flash").dump(), "f"), 1);
  EXPECT_EQ(flash.total, 290942289362);
  EXPECT_EQ(flash.total - flash.mtp, 284332240471);  // published: 284 B
  EXPECT_EQ(flash.active - flash.mtp_active, 13799632471);
  EXPECT_EQ(flash.hash_routing_entries, 3 * 129280 * 6);
  const ParamCount pro = count_params(parse_config(preset("deepseek-v4-pro").dump(), "p"), 1);
  EXPECT_EQ(pro.total - pro.mtp, 1572997201763);  // published: 1.6 T
  EXPECT_EQ(pro.active - pro.mtp_active, 49779081059);  // published: 49 B
}

TEST(ConfigV4, TheEngineRefusesWhatItDoesNotBuildInOneLine) {
  json j = preset("v4-small");
  j["compress_ratios"] = {0, 0, 4, 0, 0, 0, 0};
  const ModelConfig csa = parse_config(j.dump(), "c");
  try {
    init_model(csa, 1);
    ADD_FAILURE() << "built a CSA layer";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("compress_ratios[2] = 4: compressed attention (CSA"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace memoe
