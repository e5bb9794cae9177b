// Inference from the mapped checkpoint (model/checkpoint.h,
// WeightStorage::mapped): the weights are views of model.safetensors in its
// stored dtype, and the model computes what the copied one computes.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/test_files.h"
#include "model/checkpoint.h"
#include "model/inference.h"

namespace memoe {
namespace {

std::string fixture_dir(const std::string& name) { return std::string(MEMOE_SOURCE_DIR) + "/tests/fixtures/" + name; }

const std::vector<int64_t> kIds = {1, 5, 9, 2, 7, 7, 3, 11, 4, 6, 8, 10, 12, 2, 5};

// Prefill 9 tokens in chunks of 4, then decode the rest: every logits row.
std::vector<float> cached_logits(const Model& m) {
  SequenceState s = new_sequence(m);
  Tensor logits;
  feed_tokens(m, s, kIds.data(), 9, 4, Logits::All, logits);
  std::vector<float> rows(logits.data(), logits.data() + logits.numel());
  for (size_t t = 9; t < kIds.size(); ++t) {
    decode_step(m, {&s}, &kIds[t], logits);
    rows.insert(rows.end(), logits.data(), logits.data() + logits.numel());
  }
  return rows;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), sizeof(float) * a.size()) == 0;
}

LoadOptions mapped(TableStorage tables = TableStorage::mapped, PrefetchMethod prefetch = PrefetchMethod::off) {
  LoadOptions o;
  o.weights = WeightStorage::mapped;
  o.engram_tables = tables;
  o.engram_prefetch = prefetch;
  return o;
}

const Tensor& first_engram_table(const Model& m) {
  for (const LayerParams& l : m.params.layers)
    if (l.has_engram) return l.engram.embedding;
  throw Error("no Engram layer");
}

class MappedWeights : public io_testing::TempDirTest, public ::testing::WithParamInterface<std::string> {};

TEST_P(MappedWeights, AnF32CheckpointGivesTheCopiedModelsLogitsBitForBit) {
  const Model copied = load_model(fixture_dir(GetParam()));
  save_model(copied, dir_.string());
  const Model m = load_model(dir_.string(), mapped());
  EXPECT_TRUE(m.params.embed_tokens.is_view());
  EXPECT_TRUE(m.params.layers[0].attn.o_proj.is_view());
  EXPECT_TRUE(first_engram_table(m).is_view());
  EXPECT_FALSE(m.params.layers[0].input_layernorm.is_view());  // small tensors are read into fp32
  EXPECT_TRUE(same_bits(cached_logits(copied), cached_logits(m)));
  // The full forward pass reads the views too.
  ModelState a, b;
  model_forward(copied, kIds.data(), 1, int64_t(kIds.size()), a);
  model_forward(m, kIds.data(), 1, int64_t(kIds.size()), b);
  EXPECT_EQ(std::memcmp(a.logits.data(), b.logits.data(), sizeof(float) * size_t(a.logits.numel())), 0);
}

TEST_P(MappedWeights, ABf16CheckpointIsReadInPlaceAsBf16) {
  save_model(load_model(fixture_dir(GetParam())), dir_.string(), DType::BF16);
  Model m = load_model(dir_.string(), mapped());
  const Tensor& wo = m.params.layers[0].attn.o_proj;
  EXPECT_FALSE(wo.has_f32());
  EXPECT_NE(wo.bf16(), nullptr);
  EXPECT_FALSE(first_engram_table(m).has_f32());
  m.params.set_precision(Precision::fp32);  // nothing to drop: its products stay bf16
  EXPECT_NE(wo.bf16(), nullptr);
  // The same numbers as the checkpoint widened into fp32 and run in bf16.
  Model copied = load_model(dir_.string());
  copied.params.set_precision(Precision::bf16);
  EXPECT_TRUE(same_bits(cached_logits(copied), cached_logits(m)));
}

TEST_P(MappedWeights, ResidentTablesAndReadAheadChangeNoLogit) {
  save_model(load_model(fixture_dir(GetParam())), dir_.string());
  const Model base = load_model(dir_.string(), mapped());
  const std::vector<float> want = cached_logits(base);
  const Model resident = load_model(dir_.string(), mapped(TableStorage::resident));
  EXPECT_NE(first_engram_table(resident).data(), first_engram_table(base).data());  // a copy, not the mapping
  EXPECT_EQ(resident.engram_prefetcher, nullptr);
  EXPECT_TRUE(same_bits(want, cached_logits(resident)));
  for (PrefetchMethod method : {PrefetchMethod::madvise, PrefetchMethod::reader}) {
    const Model m = load_model(dir_.string(), mapped(TableStorage::mapped, method));
    ASSERT_NE(m.engram_prefetcher, nullptr);
    EXPECT_EQ(m.engram_prefetcher->method(), method);
    EXPECT_TRUE(same_bits(want, cached_logits(m))) << prefetch_method_name(method);
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, MappedWeights, ::testing::Values("mla_moe_engram", "gqa_softmax_engram"));

// The rows read ahead are the rows the layer then reads.
TEST(EngramWindowRows, AreTheRowsTheForwardPassGathers) {
  const Model m = load_model(fixture_dir("mla_moe_engram"));
  const ModelConfig& cfg = m.config;
  const int layer = cfg.engram->layer_ids.at(0);
  const int64_t before = cfg.engram->max_ngram_size - 1, L = int64_t(kIds.size());
  ModelState st;
  model_forward(m, kIds.data(), 1, L, st);
  const std::vector<int64_t>& full = st.layers[size_t(layer)].engram.rows;  // [L, T]
  const int64_t T = cfg.engram->tables_per_layer();
  // The window of the last 3 positions: their ids and the N-1 before them.
  const int64_t first = L - 3;
  std::vector<int64_t> window;
  for (int64_t p = first - before; p < L; ++p) window.push_back(m.token_map[size_t(kIds[size_t(p)])]);
  const std::vector<int64_t> rows = engram_window_rows(cfg, m.engram_hash[size_t(layer)], window.data(), 1, 3);
  ASSERT_EQ(rows.size(), size_t(3 * T));
  EXPECT_TRUE(std::equal(rows.begin(), rows.end(), full.begin() + first * T));
}

TEST(TableStorageNames, ParseAndRefuse) {
  EXPECT_EQ(parse_table_storage("mmap"), TableStorage::mapped);
  EXPECT_EQ(parse_table_storage("resident"), TableStorage::resident);
  EXPECT_STREQ(table_storage_name(TableStorage::resident), "resident");
  EXPECT_THROW(parse_table_storage("disk"), Error);
}

}  // namespace
}  // namespace memoe
