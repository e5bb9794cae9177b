// Inference over the cache (model/inference.h) against the full forward pass:
// logits at every position, for prefill in chunks of 1, 7 and the whole
// sequence, prefill then one-token decode, on the reference fixtures (MLA with
// and without q-LoRA, YaRN, GQA, n_group > 1, softmax and sigmoid routing)
// and on Engram variants with N = 3 and 4 and kernel sizes 2-4.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "core/error.h"
#include "io/npy.h"
#include "model/checkpoint.h"
#include "model/inference.h"
#include "model/init.h"

namespace memoe {
namespace {

std::string fixture_dir(const std::string& name) { return std::string(MEMOE_SOURCE_DIR) + "/tests/fixtures/" + name; }

// Full-forward logits of one sequence [L, V].
Tensor full_logits(const Model& m, const std::vector<int64_t>& ids) {
  ModelState st;
  model_forward(m, ids.data(), 1, int64_t(ids.size()), st);
  return st.logits;
}

// max |a - b| / max |a|.
double relative_error(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.numel(), b.numel());
  double err = 0, scale = 0;
  for (int64_t i = 0; i < std::min(a.numel(), b.numel()); ++i) {
    err = std::max(err, double(std::fabs(a[i] - b[i])));
    scale = std::max(scale, double(std::fabs(a[i])));
  }
  return err / std::max(scale, 1e-30);
}

// Every way of feeding the sequence gives the full forward's logits.
void expect_cache_matches_full_forward(const Model& m, const std::vector<int64_t>& ids, const std::string& what) {
  const int64_t L = int64_t(ids.size()), V = m.config.vocab_size;
  const Tensor want = full_logits(m, ids);
  for (int64_t chunk : {int64_t{1}, int64_t{7}, L}) {
    SequenceState s = new_sequence(m);
    Tensor got;
    feed_tokens(m, s, ids.data(), L, chunk, Logits::All, got);
    EXPECT_LE(relative_error(want, got), 1e-4) << what << ", chunk " << chunk;
    EXPECT_EQ(s.length, L);
  }
  // Prefill P, then decode the rest one token at a time (Last logits each).
  const int64_t P = L / 2;
  SequenceState s = new_sequence(m);
  Tensor prefix, step;
  feed_tokens(m, s, ids.data(), P, 5, Logits::All, prefix);
  Tensor got({L, V});
  std::copy(prefix.data(), prefix.data() + P * V, got.data());
  for (int64_t t = P; t < L; ++t) {
    feed_tokens(m, s, ids.data() + t, 1, 1, Logits::Last, step);
    std::copy(step.data(), step.data() + V, got.data() + t * V);
  }
  EXPECT_LE(relative_error(want, got), 1e-4) << what << ", prefill " << P << " then decode";
}

class CachedInference : public ::testing::TestWithParam<std::string> {};

TEST_P(CachedInference, MatchesTheFullForwardAtEveryPosition) {
  const std::string dir = fixture_dir(GetParam());
  const Model m = load_model(dir);
  NpyArray ids_arr = read_npy(dir + "/ids.npy");
  const std::vector<int64_t> all = ids_arr.to_i64();
  const int64_t B = ids_arr.shape[0], L = ids_arr.shape[1];
  for (int64_t b = 0; b < B; ++b)
    expect_cache_matches_full_forward(m, std::vector<int64_t>(all.begin() + b * L, all.begin() + (b + 1) * L),
                                      GetParam() + " sequence " + std::to_string(b));
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CachedInference,
                         ::testing::Values("mla_moe_engram", "gqa_softmax_engram", "mla_noq", "mla_long",
                                           "mla_aux_loss"));

// Sequences of different lengths decode together, one joining and one
// leaving between steps; every logits row of each equals its own full
// forward's at that position.
void expect_batched_decode_matches(const Model& m, const std::string& what) {
  const int64_t V = m.config.vocab_size;
  struct Seq {
    std::vector<int64_t> ids;
    SequenceState state;
    std::vector<float> rows;  // logits of positions 0.. as produced
  };
  auto token = [&](int64_t a, int64_t b) { return (a * 7 + b * 13 + 1) % V; };
  std::vector<Seq> seqs(3);
  const int64_t prompt[3] = {12, 5, 9};
  auto prefill = [&](Seq& s, int64_t n, int64_t salt) {
    s.state = new_sequence(m);
    for (int64_t i = 0; i < n; ++i) s.ids.push_back(token(i, salt));
    Tensor logits;
    feed_tokens(m, s.state, s.ids.data(), n, 4, Logits::All, logits);
    s.rows.assign(logits.data(), logits.data() + n * V);
  };
  prefill(seqs[0], prompt[0], 1);
  prefill(seqs[1], prompt[1], 2);
  for (int step = 0; step < 8; ++step) {
    if (step == 3) prefill(seqs[2], prompt[2], 3);  // C joins
    std::vector<size_t> active;
    for (size_t s = 0; s < 3; ++s) {
      const bool in = s == 0 || (s == 1 && step < 5) || (s == 2 && step >= 3);  // B leaves after step 4
      if (in) active.push_back(s);
    }
    std::vector<SequenceState*> states;
    std::vector<int64_t> next;
    for (size_t s : active) {
      Seq& q = seqs[s];
      q.ids.push_back(token(int64_t(q.ids.size()), int64_t(10 + s)));
      states.push_back(&q.state);
      next.push_back(q.ids.back());
    }
    Tensor logits;
    decode_step(m, states, next.data(), logits);
    ASSERT_EQ(logits.numel(), int64_t(active.size()) * V);
    for (size_t j = 0; j < active.size(); ++j)
      seqs[active[j]].rows.insert(seqs[active[j]].rows.end(), logits.data() + int64_t(j) * V,
                                  logits.data() + int64_t(j + 1) * V);
  }
  for (size_t s = 0; s < 3; ++s) {
    const Tensor want = full_logits(m, seqs[s].ids);
    Tensor got({int64_t(seqs[s].ids.size()), V});
    ASSERT_EQ(seqs[s].rows.size(), size_t(got.numel())) << what << " sequence " << s;
    std::copy(seqs[s].rows.begin(), seqs[s].rows.end(), got.data());
    EXPECT_LE(relative_error(want, got), 1e-4) << what << " sequence " << s;
    EXPECT_EQ(seqs[s].state.length, int64_t(seqs[s].ids.size()));
  }
}

TEST(CachedInferenceBatch, SequencesDecodeTogetherJoiningAndLeaving) {
  for (const char* fixture : {"mla_moe_engram", "gqa_softmax_engram", "mla_noq"})
    expect_batched_decode_matches(load_model(fixture_dir(fixture)), fixture);
  const Model m = load_model(fixture_dir("mla_moe_engram"));
  SequenceState a = new_sequence(m);
  Tensor logits;
  const int64_t ids[2] = {1, 2};
  EXPECT_THROW(decode_step(m, {&a, &a}, ids, logits), Error);
  EXPECT_THROW(decode_step(m, {}, ids, logits), Error);
}

TEST(CachedInferenceEngram, NgramOrdersAndKernelSizes) {
  for (int ngram : {2, 3, 4})
    for (int kernel : {2, 3, 4}) {
      ModelConfig cfg = load_config(std::string(MEMOE_SOURCE_DIR) + "/configs/tiny.json");
      cfg.engram->max_ngram_size = ngram;
      cfg.engram->kernel_size = kernel;
      cfg.engram->table_sizes.resize(size_t(ngram - 1), cfg.engram->table_sizes.front());
      Model m = init_model(cfg, uint64_t(10 * ngram + kernel));
      // The conv starts at zero (spec §5.4); give it weights so that it matters.
      for (LayerParams& l : m.params.layers)
        if (l.has_engram)
          for (int64_t i = 0; i < l.engram.conv_weight.numel(); ++i) l.engram.conv_weight[i] = 0.3f * float((i % 7) - 3);
      std::vector<int64_t> ids(37);
      for (size_t i = 0; i < ids.size(); ++i) ids[i] = int64_t((i * 13 + 5) % 64);
      expect_cache_matches_full_forward(m, ids, "N " + std::to_string(ngram) + " kernel " + std::to_string(kernel));
    }
}

TEST(CachedInferenceCache, MlaHoldsOnlyTheLatentAndTheRotaryKey) {
  const Model m = load_model(fixture_dir("mla_moe_engram"));
  const ModelConfig& c = m.config;
  SequenceState s = new_sequence(m);
  Tensor logits;
  const std::vector<int64_t> ids = {1, 2, 3, 4, 5};
  feed_tokens(m, s, ids.data(), 5, 2, Logits::Last, logits);
  EXPECT_EQ(logits.numel(), c.vocab_size);
  const int64_t per_token = kv_cache_bytes_per_token(c);
  EXPECT_EQ(per_token, int64_t(sizeof(float)) * (c.kv_lora_rank + c.qk_rope_head_dim));
  EXPECT_LT(per_token, kv_cache_bytes_per_token(c, /*expanded_mla=*/true));
  int64_t engram_bytes = 0;
  for (const EngramDecodeState& e : s.engram) engram_bytes += int64_t(sizeof(float) * e.conv_history.size());
  EXPECT_EQ(s.cache_bytes() - engram_bytes, 5 * c.num_hidden_layers * per_token);
}

}  // namespace
}  // namespace memoe
