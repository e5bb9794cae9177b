// The generation loop: greedy decoding equals the argmax of a full forward
// pass at every step, the stop id ends it without being emitted, padding
// rows past emit_vocab are never drawn, and the text stream holds back an
// incomplete UTF-8 tail.
#include "serve/generate.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "core/error.h"
#include "model/checkpoint.h"
#include "model/init.h"

namespace memoe {
namespace {

Model tiny_model() { return init_model(load_config(std::string(MEMOE_SOURCE_DIR) + "/configs/tiny.json"), 11); }

int32_t argmax_next(const Model& m, const std::vector<int64_t>& ids, int64_t emit) {
  ModelState s;
  model_forward(m, ids.data(), 1, int64_t(ids.size()), s);
  const float* row = s.logits.data() + (int64_t(ids.size()) - 1) * m.config.vocab_size;
  return int32_t(std::max_element(row, row + emit) - row);
}

Sampler greedy_sampler() {
  SamplingConfig sc;
  sc.greedy = true;
  return Sampler(sc);
}

TEST(Generate, GreedyIsTheArgmaxOfEachFullForwardPass) {
  const Model m = tiny_model();
  Sampler sampler = greedy_sampler();
  GenerateOptions o;
  o.max_tokens = 6;
  o.emit_vocab = 40;
  std::vector<int32_t> seen;
  const GenerateResult r = generate(m, {3, 17, 5}, o, sampler, [&](int32_t t) { seen.push_back(t); });
  ASSERT_EQ(r.tokens.size(), 6u);
  EXPECT_EQ(r.finish, FinishReason::Length);
  EXPECT_EQ(seen, r.tokens);
  std::vector<int64_t> ids = {3, 17, 5};
  for (int32_t t : r.tokens) {
    EXPECT_EQ(t, argmax_next(m, ids, 40));
    EXPECT_LT(t, 40);
    ids.push_back(t);
  }
}

// Through the KV cache, prefilled in chunks, on models with MLA + q-LoRA +
// YaRN + Engram and with GQA: 30 greedy tokens, each the full forward's argmax.
TEST(Generate, CachedGreedyEqualsRecomputation) {
  for (const char* fixture : {"mla_moe_engram", "gqa_softmax_engram"}) {
    const Model m = load_model(std::string(MEMOE_SOURCE_DIR) + "/tests/fixtures/" + fixture);
    Sampler sampler = greedy_sampler();
    GenerateOptions o;
    o.max_tokens = 30;
    o.prefill_chunk = 4;
    const std::vector<int64_t> prompt = {3, 17, 5, 9, 22, 1, 8, 30, 2, 11};
    const GenerateResult r = generate(m, prompt, o, sampler);
    ASSERT_EQ(r.tokens.size(), 30u) << fixture;
    EXPECT_GT(r.cache_bytes, 0);
    std::vector<int64_t> ids = prompt;
    for (size_t i = 0; i < r.tokens.size(); ++i) {
      ASSERT_EQ(r.tokens[i], argmax_next(m, ids, m.config.vocab_size)) << fixture << " token " << i;
      ids.push_back(r.tokens[i]);
    }
  }
}

// The context bounds the cache: generation stops when it is full, and a
// prompt longer than it is refused.
TEST(Generate, ContextLimitEndsGenerationAndRefusesLongPrompts) {
  const Model m = tiny_model();
  Sampler sampler = greedy_sampler();
  GenerateOptions o;
  o.max_tokens = 50;
  o.max_context = 8;
  const GenerateResult r = generate(m, {3, 17, 5}, o, sampler);
  EXPECT_EQ(r.finish, FinishReason::Length);
  EXPECT_EQ(r.tokens.size(), 6u);  // positions 3..7 fed, the sixth token sampled from the full cache
  EXPECT_THROW(generate(m, std::vector<int64_t>(9, 4), o, sampler), Error);
}

TEST(Generate, StopIdEndsWithoutBeingEmitted) {
  const Model m = tiny_model();
  Sampler sampler = greedy_sampler();
  GenerateOptions o;
  o.max_tokens = 5;
  o.stop_id = argmax_next(m, {3, 17, 5}, m.config.vocab_size);
  const GenerateResult r = generate(m, {3, 17, 5}, o, sampler);
  EXPECT_TRUE(r.tokens.empty());
  EXPECT_EQ(r.finish, FinishReason::Stop);
  EXPECT_THROW(generate(m, {}, o, sampler), Error);
  EXPECT_THROW(generate(m, {m.config.vocab_size}, o, sampler), Error);
}

}  // namespace
}  // namespace memoe
