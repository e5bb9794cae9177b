// config.json parsing: every numeric key is an exact integer or a finite
// float in its range, sizes are bounded, and no input (however mutated) gets
// past parsing into undefined behaviour or a computation that does not end.
#include "io/config.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "cli_runner.h"
#include "core/error.h"
#include "io/config_files.h"
#include "io/test_files.h"
#include "model/param_count.h"

namespace memoe {
namespace {

using nlohmann::json;

using io_testing::parse_error;
using io_testing::preset_json;

json yarn() {
  return {{"type", "yarn"}, {"factor", 40}, {"original_max_position_embeddings", 64}, {"beta_fast", 32},
          {"beta_slow", 1}, {"mscale", 1.0}, {"mscale_all_dim", 1.0}};
}

// The tiny preset with one key set (a "a.b" key sets b inside object a).
// (tiny has no rope_scaling; a rope_scaling.* key sets it inside yarn()).
json tiny_with(const std::string& key, const json& value) {
  json j = preset_json("tiny");
  const size_t dot = key.find('.');
  if (dot == std::string::npos) {
    j[key] = value;
  } else {
    const std::string object = key.substr(0, dot);
    if (object == "rope_scaling") j[object] = yarn();
    j[object][key.substr(dot + 1)] = value;
  }
  return j;
}

// Expects the error for tiny_with(key, value) to name `key` and contain `what`.
void expect_refused(const std::string& key, const json& value, const std::string& what = "") {
  const std::string e = parse_error(tiny_with(key, value));
  EXPECT_NE(e.find(key), std::string::npos) << key << " = " << value.dump() << ": " << e;
  EXPECT_NE(e.find(what), std::string::npos) << key << " = " << value.dump() << ": " << e;
  EXPECT_EQ(e.find('\n'), std::string::npos) << e;
}

TEST(Config, EveryPresetParsesAndRoundTrips) {
  for (const char* name : {"tiny", "small", "v4-lite-200b", "v4-1t"}) {
    const ModelConfig c = load_config(std::string(MEMOE_SOURCE_DIR) + "/configs/" + name + ".json");
    EXPECT_EQ(config_to_json(parse_config(config_to_json(c), name)), config_to_json(c)) << name;
  }
}

TEST(Config, IntegralFloatIsThatInteger) {
  EXPECT_EQ(parse_config(tiny_with("hidden_size", 32.0).dump(), "cfg").hidden_size, 32);
  EXPECT_EQ(parse_config(tiny_with("num_hidden_layers", 3.0).dump(), "cfg").num_hidden_layers, 3);
  EXPECT_EQ(parse_config(tiny_with("engram.seed", 1e3).dump(), "cfg").engram->seed, 1000);
}

TEST(Config, NonIntegralFloatForIntegerKeyIsRefused) {
  expect_refused("hidden_size", 32.5, "must be an integer, got 32.5");
  expect_refused("num_hidden_layers", 2.5, "must be an integer");
  expect_refused("engram.kernel_size", 3.999, "must be an integer");
  expect_refused("rope_scaling.original_max_position_embeddings", 64.5, "must be an integer");
}

// 1e20 and 9.3e18 are integral doubles beyond int64: casting them was UB.
TEST(Config, FloatOutsideInt64IsRefused) {
  expect_refused("hidden_size", 1e20, "out of range for int64");
  expect_refused("vocab_size", 9.3e18, "out of range for int64");
  expect_refused("vocab_size", -1e19, "out of range for int64");
  expect_refused("engram.seed", 9223372036854775808.0, "out of range for int64");  // 2^63 exactly
  expect_refused("num_hidden_layers", 1e20, "out of range for int32");
  // JSON has no NaN or inf, and nlohmann refuses a literal that overflows a double.
  try {
    parse_config(R"({"rope_theta": 1e400})", "cfg.json");
    ADD_FAILURE() << "parsed";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cfg.json: not valid JSON"), std::string::npos) << e.what();
  }
  // A struct built in code is checked as well.
  ModelConfig c = parse_config(preset_json("tiny").dump(), "cfg");
  c.rope_theta = std::numeric_limits<double>::infinity();
  EXPECT_THROW(validate_config(c), Error);
  c = parse_config(preset_json("tiny").dump(), "cfg");
  c.rms_norm_eps = std::numeric_limits<double>::quiet_NaN();
  EXPECT_THROW(validate_config(c), Error);
}

TEST(Config, IntegerOutsideTheKeysTypeIsRefusedNotTruncated) {
  // 2^32 + 3 truncated to int is 3, a valid layer count.
  expect_refused("num_hidden_layers", int64_t(4294967299), "out of range for int32");
  expect_refused("num_hidden_layers", int64_t(2147483648), "out of range for int32");
  expect_refused("n_routed_experts", int64_t(-2147483649), "out of range for int32");
  expect_refused("num_hidden_layers", 2147483648.0, "out of range for int32");
  // Above INT64_MAX: nlohmann holds these as uint64, which get<int64_t> wrapped.
  expect_refused("hidden_size", uint64_t(9223372036854775808u), "out of range for int64");
  expect_refused("vocab_size", uint64_t(18446744073709551615u), "out of range for int64");
}

TEST(Config, LayerIdsAndTableSizesTake64BitValuesAsErrors) {
  // 2^32 + 1 truncated to int is layer 1, which tiny has.
  expect_refused("engram.layer_ids", json::array({int64_t(4294967297)}), "out of range for int32");
  expect_refused("engram.layer_ids", json::array({-4294967295}), "out of range for int32");
  expect_refused("engram.layer_ids", json::array({1.5}), "must be an integer");
  expect_refused("engram.layer_ids", json::array({"1"}), "must be an integer");
  expect_refused("engram.table_sizes", json::array({31, uint64_t(18446744073709551615u)}), "out of range for int64");
  expect_refused("engram.table_sizes", json::array({31, 1e30}), "out of range for int64");
  expect_refused("engram.table_sizes", json::array({31, int64_t(1) << 40}), "outside 2..4294967296");
  expect_refused("engram.layer_ids", 1, "must be a list");
  EXPECT_EQ(parse_config(tiny_with("engram.layer_ids", json::array({2.0})).dump(), "cfg").engram->layer_ids,
            std::vector<int>{2});
}

TEST(Config, StringsBoolsNullsAndContainersAreNotNumbers) {
  for (const json& bad : {json("32"), json(true), json(nullptr), json::array({32}), json::object()}) {
    expect_refused("hidden_size", bad, "must be an integer");
    expect_refused("rope_theta", bad, "must be a finite number");
    expect_refused("engram.table_lr_mult", bad, "must be a finite number");
    expect_refused("rope_scaling.factor", bad, "must be a finite number");
  }
  expect_refused("tie_word_embeddings", 1, "must be a boolean");
  expect_refused("attention", 1, "must be a string");
  expect_refused("rms_norm_eps", "1e-6", "must be a finite number");
}

// Null has a meaning only where HF configs (and reference/config.py) give it one.
TEST(Config, NullWhereItMeansDerived) {
  json j = preset_json("tiny");
  j["q_lora_rank"] = nullptr;  // DeepSeek's "no q LoRA"
  j["num_key_value_heads"] = nullptr;
  j["head_dim"] = nullptr;
  j["norm_topk_prob"] = nullptr;
  const ModelConfig c = parse_config(j.dump(), "cfg");
  EXPECT_EQ(c.q_lora_rank, 0);
  EXPECT_EQ(c.num_key_value_heads, c.num_attention_heads);
  EXPECT_EQ(c.head_dim, c.hidden_size / c.num_attention_heads);
  EXPECT_TRUE(c.norm_topk_prob);
}

TEST(Config, NegativeOrZeroSizesAreRefused) {
  for (const char* key : {"vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                          "max_position_embeddings", "engram.n_head_per_ngram", "engram.n_embed_per_ngram",
                          "engram.kernel_size", "engram.max_ngram_size"})
    expect_refused(key, 0);
  for (const char* key : {"intermediate_size", "moe_intermediate_size", "n_routed_experts", "n_shared_experts",
                          "num_experts_per_tok", "n_group", "topk_group", "q_lora_rank", "kv_lora_rank",
                          "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "head_dim",
                          "num_key_value_heads", "first_k_dense_replace", "engram.seed", "engram.pad_id"})
    expect_refused(key, -1);
  expect_refused("rope_scaling.original_max_position_embeddings", 0);
}

TEST(Config, FloatsOutsideTheirRangeAreRefused) {
  expect_refused("rms_norm_eps", 0.0, "must be in (0, 1]");
  expect_refused("rms_norm_eps", -1e-6);
  expect_refused("rms_norm_eps", 2.0);
  expect_refused("rope_theta", 1.0, "must be > 1");
  expect_refused("routed_scaling_factor", 0.0, "must be positive");
  expect_refused("bias_update_speed", -0.1, "must be >= 0");
  expect_refused("seq_aux_loss_alpha", -1.0, "must be >= 0");
  expect_refused("engram.table_lr_mult", 0.0, "must be positive");
  for (const auto& [key, value] : std::vector<std::pair<std::string, json>>{
           {"factor", 0.5}, {"beta_slow", 0.0}, {"beta_fast", 0.5}, {"mscale_all_dim", -1.0}}) {
    json j = tiny_with("rope_scaling", yarn());
    j["rope_scaling"][key] = value;
    if (key == "mscale_all_dim") j["rope_scaling"]["mscale"] = value;
    const std::string e = parse_error(j);
    EXPECT_NE(e.find("rope_scaling."), std::string::npos) << key << ": " << e;
  }
  EXPECT_NO_THROW(parse_config(tiny_with("rope_scaling", yarn()).dump(), "cfg"));
}

TEST(Config, SizesAboveTheirLimitsAreRefused) {
  expect_refused("num_hidden_layers", 1025, "outside 1..1024");
  expect_refused("vocab_size", 16777217, "outside 1..16777216");
  expect_refused("hidden_size", 1048577, "outside 1..1048576");
  expect_refused("n_routed_experts", 16385, "outside 0..16384");
  expect_refused("num_attention_heads", 4097, "outside 1..4096");
  expect_refused("max_position_embeddings", int64_t(1) << 40, "outside 1..67108864");
  expect_refused("first_k_dense_replace", 1025, "outside 0..1024");
  EXPECT_NO_THROW(parse_config(tiny_with("first_k_dense_replace", 4).dump(), "cfg"));  // all 3 layers dense
  expect_refused("engram.max_ngram_size", 17, "outside 2..16");
  expect_refused("engram.kernel_size", 257, "outside 1..256");
  expect_refused("engram.n_head_per_ngram", 257, "outside 1..256");
  expect_refused("engram.seed", (int64_t(1) << 62) + 1, "outside 0..");
  // Each size within its limit, but their product is not.
  json j = preset_json("tiny");
  j["hidden_size"] = 1 << 20;
  j["moe_intermediate_size"] = 1 << 20;
  j["n_routed_experts"] = 16384;
  j["n_group"] = 1;
  j["topk_group"] = 1;
  EXPECT_NE(parse_error(j).find("parameters, more than the limit"), std::string::npos) << parse_error(j);
  // Too many Engram tables (one prime search each): 2 layers x 2 orders x 65 heads.
  json t = preset_json("small");
  t["engram"]["n_head_per_ngram"] = 65;
  t["engram"]["n_embed_per_ngram"] = 130;
  EXPECT_NE(parse_error(t).find("260 tables"), std::string::npos) << parse_error(t);
  t["engram"]["n_head_per_ngram"] = 64;
  t["engram"]["n_embed_per_ngram"] = 128;
  EXPECT_NO_THROW(parse_config(t.dump(), "cfg"));  // 256, the limit
}

// num_hidden_layers 2147483647 used to parse, and `memoe params` then ran for
// longer than anyone waited.
TEST(Config, HugeLayerCountIsAnsweredAtOnce) {
  const auto start = std::chrono::steady_clock::now();
  expect_refused("num_hidden_layers", 2147483647, "outside 1..1024");
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 1.0);
}

// The worst the table limit allows for the prime search (256 tables of one
// order, each searched past those before it) is still sized in well under a
// second (ctest's timeout bounds it here).
TEST(Config, MostEngramTablesAllowedAreSizedAtOnce) {
  json j = preset_json("tiny");
  j["num_hidden_layers"] = 256;
  j["engram"]["layer_ids"] = json::array();
  for (int i = 0; i < 256; ++i) j["engram"]["layer_ids"].push_back(i);
  j["engram"]["max_ngram_size"] = 2;
  j["engram"]["n_head_per_ngram"] = 1;
  j["engram"]["n_embed_per_ngram"] = 1;
  j["engram"]["table_sizes"] = {int64_t(1) << 32};
  const ParamCount pc = count_params(parse_config(j.dump(), "cfg"), 4096);
  EXPECT_GT(pc.engram_table, 256 * (int64_t(1) << 32));
}

class ConfigCli : public testing::CliTest {};

TEST_F(ConfigCli, ParamsRefusesHugeLayerCountInOneLine) {
  io_testing::write_bytes(file("huge.json"), tiny_with("num_hidden_layers", 2147483647).dump());
  const auto start = std::chrono::steady_clock::now();
  const testing::CliResult r = memoe("params " + file("huge.json"));
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 10.0);
  EXPECT_NE(r.status, 0) << r.out;
  EXPECT_NE(r.status, -1) << "crashed: " << r.err;
  EXPECT_NE(r.err.find("num_hidden_layers"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

// ------------------------------------------------------------------ mutation

// Every numeric leaf of j (array entries included), as JSON pointers.
void numeric_leaves(const json& j, const json::json_pointer& at, std::vector<json::json_pointer>& out) {
  if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it) numeric_leaves(it.value(), at / it.key(), out);
  } else if (j.is_array()) {
    for (size_t i = 0; i < j.size(); ++i) numeric_leaves(j[i], at / i, out);
  } else if (j.is_number()) {
    out.push_back(at);
  }
}

json mutate(const json& v, std::mt19937_64& rng) {
  switch (std::uniform_int_distribution<int>(0, 11)(rng)) {
    case 0:
    case 11: {  // scale by 10^k
      const int k = std::uniform_int_distribution<int>(-2, 12)(rng);
      const double x = v.get<double>() * std::pow(10.0, k);
      if (v.is_number_integer() && std::floor(x) == x && std::fabs(x) < 9e18) return int64_t(x);
      return x;
    }
    case 1: return -1;
    case 2: return 0;
    case 3: return 1e20;
    case 4: return int64_t(1) << 31;
    case 5: return uint64_t(1) << 63;
    case 6: return 1.5;
    case 7: return "12";
    case 8: return nullptr;
    case 9: return true;
    default: return std::uniform_int_distribution<int64_t>(-5, int64_t(1) << 34)(rng);
  }
}

// Seeded random mutations of the tiny and small presets: each either parses,
// validates and is sized at once (as `memoe params` does), or throws
// memoe::Error; never another exception, a crash or undefined behaviour (the
// ASan/UBSan build runs this too), and never a long computation.
TEST(ConfigMutation, EachMutantParsesOrGivesOneLineError) {
  std::mt19937_64 rng(20240611);
  int accepted = 0, refused = 0;
  for (const char* name : {"tiny", "small"}) {
    const json base = preset_json(name);
    std::vector<json::json_pointer> leaves;
    numeric_leaves(base, json::json_pointer(), leaves);
    ASSERT_GT(leaves.size(), 30u);
    for (int trial = 0; trial < 200; ++trial) {
      json j = base;
      const int mutations = std::uniform_int_distribution<int>(0, 3)(rng) == 0 ? 2 : 1;
      for (int m = 0; m < mutations; ++m) {
        const json::json_pointer& at = leaves[std::uniform_int_distribution<size_t>(0, leaves.size() - 1)(rng)];
        if (j.contains(at) && j[at].is_number()) j[at] = mutate(j[at], rng);
      }
      const std::string text = j.dump();
      const auto start = std::chrono::steady_clock::now();
      try {
        const ModelConfig c = parse_config(text, "mutant.json");
        const ParamCount pc = count_params(c, 4096);
        EXPECT_GT(pc.total, 0) << text;
        EXPECT_GT(activation_bytes(c, 1, 4096), 0) << text;
        EXPECT_GT(training_state_bytes(c, 1, 4096), 0) << text;
        EXPECT_EQ(config_to_json(parse_config(config_to_json(c), "again")), config_to_json(c)) << text;
        ++accepted;
      } catch (const Error& e) {
        EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
        EXPECT_EQ(std::string(e.what()).rfind("mutant.json: ", 0), 0u) << e.what();
        ++refused;
      } catch (const std::exception& e) {
        ADD_FAILURE() << "not a memoe::Error: " << e.what() << "\n" << text;
      }
      EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 5.0) << text;
    }
  }
  // Both outcomes are exercised (35 and 365 with this seed).
  EXPECT_GT(accepted, 20);
  EXPECT_GT(refused, 200);
  std::printf("mutants: %d accepted, %d refused\n", accepted, refused);
}

}  // namespace
}  // namespace memoe
