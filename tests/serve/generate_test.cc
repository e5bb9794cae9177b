// The generation loop: greedy decoding equals the argmax of a full forward
// pass at every step, the stop id ends it without being emitted, padding
// rows past emit_vocab are never drawn, and the text stream holds back an
// incomplete UTF-8 tail.
#include "serve/generate.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "core/error.h"
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
