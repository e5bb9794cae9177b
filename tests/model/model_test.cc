// Whole-model tests on tiny configs: finite-difference gradients through the
// full stack (MLA and GQA, with Engram, MoE and n_group > 1), causality of
// the logits, and checkpoint round trips.
#include "model/model.h"

#include <gtest/gtest.h>
#include <fstream>
#include "core/bf16.h"
#include <map>

#include <filesystem>

#include "core/error.h"
#include "core/rng.h"
#include "grad_check.h"
#include "random_ids.h"
#include "model/checkpoint.h"
#include "model/init.h"

namespace memoe {
namespace {

using testing::expect_gradient_matches;

ModelConfig tiny_config(AttentionKind kind) {
  ModelConfig cfg = load_config(std::string(MEMOE_SOURCE_DIR) + "/configs/tiny.json");
  if (kind == AttentionKind::GQA) {
    cfg.attention = AttentionKind::GQA;
    cfg.num_attention_heads = 4;
    cfg.num_key_value_heads = 2;
    cfg.head_dim = 8;
  }
  cfg.engram->layer_ids = {0, 2};
  validate_config(cfg);
  return cfg;
}

// Weights of O(1) effect everywhere (a fresh init has a zero short conv and
// tiny projections, which would hide a missing gradient term).
Model random_model(const ModelConfig& cfg, uint64_t seed) {
  Model m = init_model(cfg, seed);
  Rng rng(seed + 1);
  m.params.visit([&](const std::string& name, Tensor& t) {
    const bool is_norm = name.find("norm") != std::string::npos;
    const bool is_router_bias = name.find("correction_bias") != std::string::npos;
    for (int64_t i = 0; i < t.numel(); ++i) {
      double z = rng.normal();
      t[i] = is_norm ? float(1.0 + 0.1 * z) : is_router_bias ? float(0.05 * z) : float(0.3 * z);
    }
  });
  return m;
}

using testing::random_ids;

class WholeModel : public ::testing::TestWithParam<AttentionKind> {};

// The smallest |Engram gate score| of a forward pass. Near zero the signed
// square root is steep, and a finite difference there measures curvature.
double min_gate_score(const ModelState& s) {
  double m = 1e30;
  for (const LayerState& l : s.layers)
    for (int64_t i = 0; i < l.engram.gate_score.numel(); ++i) m = std::min(m, double(std::fabs(l.engram.gate_score[i])));
  return m;
}

TEST_P(WholeModel, GradientsMatchFiniteDifferences) {
  const ModelConfig cfg = tiny_config(GetParam());
  const int64_t B = 2, L = 10;
  const auto ids = random_ids(cfg, B * L, 3);
  const auto targets = next_token_targets(ids.data(), B, L);
  ModelState state;
  // A model whose Engram gates all sit away from the kink at zero, and
  // whose experts all get tokens (so that every gradient is non-zero).
  auto every_expert_used = [](const ModelState& s) {
    for (const LayerState& l : s.layers)
      for (int64_t c : l.moe.expert_load)
        if (c == 0) return false;
    return true;
  };
  Model m;
  for (uint64_t seed = 7;; ++seed) {
    ASSERT_LT(seed, 400u) << "no seed keeps the gate scores away from zero with every expert used";
    m = random_model(cfg, seed);
    model_forward(m, ids.data(), B, L, state);
    if (min_gate_score(state) > 0.08 && every_expert_used(state)) break;
  }
  ModelParams grads = m.make_gradients();
  const double base_loss = model_loss_and_grad(m, ids.data(), targets.data(), B, L, state, &grads);
  // Routing is piecewise: a perturbation that flips an expert choice makes
  // the finite difference meaningless, so such coordinates are skipped.
  auto routing = [&](const ModelState& s) {
    std::vector<int32_t> r;
    for (const LayerState& l : s.layers) r.insert(r.end(), l.moe.expert_ids.begin(), l.moe.expert_ids.end());
    return r;
  };
  const std::vector<int32_t> base_routing = routing(state);
  bool same_routing = true;
  auto loss = [&] {
    ModelState s;
    double v = model_loss_and_grad(m, ids.data(), targets.data(), B, L, s, nullptr);
    same_routing = same_routing && routing(s) == base_routing && min_gate_score(s) > 0.04;
    return v;
  };
  // 24 entries a tensor (half of them where the gradient is non-zero), each
  // within 3% of max(|analytic|, the tensor's gradient RMS); every tensor's
  // gradient must be non-zero, and halving it must fail the check
  // (expect_gradient_matches verifies both).
  // The floor is the finite difference's own noise: the float32 forward
  // rounds the loss at ~2^-23 |L|, which (L+ - L-) / 2h turns into
  // 2^-23 |L| / h (~5e-5 here; builds that contract or vectorise differently,
  // such as the sanitizer's -O1, land anywhere within it). Halving is still
  // caught: the sampled non-zero entries are ~1e-4 to 1e-1.
  testing::GradCheckOptions opts;
  opts.samples = 24;
  opts.rtol = 3e-2;
  opts.atol = std::ldexp(std::fabs(base_loss), -23) / double(opts.h);
  opts.smooth_here = [&] {
    bool ok = same_routing;
    same_routing = true;
    return ok;
  };

  // Every dense tensor of the model.
  std::map<std::string, Tensor*> analytic;
  grads.visit([&](const std::string& name, Tensor& g) { analytic[name] = &g; });
  int checked = 0;
  m.params.visit([&](const std::string& name, Tensor& w) {
    if (name.find("correction_bias") != std::string::npos) {
      for (int64_t i = 0; i < w.numel(); ++i) EXPECT_EQ((*analytic[name])[i], 0.0f) << name;
      return;  // selection only: no gradient by design
    }
    if (name.find("engram.embedding") != std::string::npos) return;  // sparse, below
    expect_gradient_matches(name, w.data(), w.numel(), analytic.at(name)->data(), loss, opts);
    ++checked;
  });
  EXPECT_GT(checked, 30);

  // Engram tables: the sparse gradient against perturbing rows that were read.
  for (int l : cfg.engram->layer_ids) {
    const SparseRowGrad& sg = grads.layers[size_t(l)].engram.embedding_grad;
    ASSERT_FALSE(sg.rows.empty());
    Tensor& table = m.params.layers[size_t(l)].engram.embedding;
    for (size_t r = 0; r < sg.rows.size(); r += std::max<size_t>(1, sg.rows.size() / 4)) {
      float* row = table.data() + sg.rows[r] * sg.row_width;
      expect_gradient_matches("engram table row", row, sg.row_width, sg.grad.data() + r * size_t(sg.row_width), loss,
                              opts);
    }
  }
}

TEST_P(WholeModel, FutureTokensNeverChangePastLogits) {
  const ModelConfig cfg = tiny_config(GetParam());
  Model m = random_model(cfg, 11);
  const int64_t L = 20, V = cfg.vocab_size;
  auto ids = random_ids(cfg, L, 5);
  ModelState a, b;
  model_forward(m, ids.data(), 1, L, a);
  for (int64_t t : {1, 7, 13, 19}) {
    auto changed = ids;
    changed[size_t(t)] = (ids[size_t(t)] + 17) % V;
    model_forward(m, changed.data(), 1, L, b);
    double past = 0, at_t = 0;
    for (int64_t i = 0; i < t * V; ++i) past = std::max(past, double(std::fabs(a.logits[i] - b.logits[i])));
    for (int64_t v = 0; v < V; ++v) at_t = std::max(at_t, double(std::fabs(a.logits[t * V + v] - b.logits[t * V + v])));
    EXPECT_LT(past, 1e-5) << "a token at " << t << " changed an earlier logit";
    EXPECT_GT(at_t, 1e-3) << "changing the token at " << t << " did not change its own logits";
  }
}

// Pipeline stages: layers [0, k) in one state, [k, L) and the head in
// another, the residual and its gradient handed across as a stage would
// send them, give the whole pass's logits, loss and gradients bit for bit
// (untied embeddings: with tied ones the head's and the embedding's parts
// of one gradient are summed by whoever owns it, in its own order).
TEST_P(WholeModel, LayerRangesComposeIntoTheWholePass) {
  ModelConfig cfg = tiny_config(GetParam());
  cfg.tie_word_embeddings = false;
  Model m = random_model(cfg, 21);
  const int64_t B = 2, L = 9, N = B * L, d = cfg.hidden_size, layers = cfg.num_hidden_layers;
  const auto ids = random_ids(cfg, N, 6);
  const auto targets = next_token_targets(ids.data(), B, L);
  ModelState whole;
  ModelParams g_whole = m.make_gradients();
  const double loss = model_loss_and_grad(m, ids.data(), targets.data(), B, L, whole, &g_whole);
  for (int k = 0; k <= layers; ++k) {
    ModelState first, second;
    ModelParams g_first = m.make_gradients(), g_second = m.make_gradients();
    model_begin(m, ids.data(), B, L, first);
    embed_forward(m, first);
    layers_forward(m, 0, k, first);
    model_begin(m, ids.data(), B, L, second);
    Tensor& handed = layer_input(m, second, k);
    handed.ensure({N, d});
    std::copy(layer_input(m, first, k).data(), layer_input(m, first, k).data() + N * d, handed.data());
    layers_forward(m, k, int(layers), second);
    head_forward(m, second);
    for (int64_t i = 0; i < whole.logits.numel(); ++i)
      ASSERT_EQ(second.logits[i], whole.logits[i]) << "split at layer " << k << ", logit " << i;
    Tensor dh;
    const double split_loss =
        head_loss_and_grad(m, targets.data(), second, &g_second, dh) + first.aux_loss + second.aux_loss;
    EXPECT_EQ(split_loss, loss) << "split at layer " << k;
    std::vector<int> ready;
    layers_backward(m, k, int(layers), second, g_second, dh, [&](int part) { ready.push_back(part); });
    layers_backward(m, 0, k, first, g_first, dh, [&](int part) { ready.push_back(part); });
    embed_backward(m, first, g_first, dh);
    ASSERT_EQ(ready.size(), size_t(layers)) << "split at layer " << k;
    for (int i = 0; i < int(layers); ++i) EXPECT_EQ(ready[size_t(i)], int(layers) - 1 - i);
    std::map<std::string, const Tensor*> a, b;
    g_first.visit([&](const std::string& name, Tensor& t) { a[name] = &t; });
    g_second.visit([&](const std::string& name, Tensor& t) { b[name] = &t; });
    int64_t differing = 0;
    g_whole.visit([&](const std::string& name, Tensor& t) {
      for (int64_t i = 0; i < t.numel(); ++i) differing += (*a.at(name))[i] + (*b.at(name))[i] != t[i];
    });
    EXPECT_EQ(differing, 0) << "gradient values differing, split at layer " << k;
  }
}

INSTANTIATE_TEST_SUITE_P(Attention, WholeModel, ::testing::Values(AttentionKind::MLA, AttentionKind::GQA),
                         [](const auto& info) { return info.param == AttentionKind::MLA ? "MLA" : "GQA"; });

TEST(Checkpoint, RoundTripKeepsLogitsExactlyInF32AndInBF16) {
  const ModelConfig cfg = tiny_config(AttentionKind::MLA);
  Model m = random_model(cfg, 3);
  const auto ids = random_ids(cfg, 12, 9);
  ModelState ref, got;
  model_forward(m, ids.data(), 1, 12, ref);
  const auto dir = std::filesystem::temp_directory_path() / ("memoe_ckpt_" + std::to_string(::getpid()));
  save_model(m, (dir / "f32").string());
  Model loaded = load_model((dir / "f32").string());
  EXPECT_EQ(loaded.token_map, m.token_map);
  EXPECT_EQ(loaded.engram_hash[0].multipliers, m.engram_hash[0].multipliers);
  model_forward(loaded, ids.data(), 1, 12, got);
  for (int64_t i = 0; i < ref.logits.numel(); ++i) ASSERT_EQ(ref.logits[i], got.logits[i]);

  // BF16: exactly the model whose weights were rounded to bf16 in memory
  // (round to nearest even), and every stored weight is that rounding.
  save_model(m, (dir / "bf16").string(), DType::BF16);
  Model bf16 = load_model((dir / "bf16").string());
  Model rounded = m;
  int64_t changed = 0;
  rounded.params.visit([&](const std::string&, Tensor& t) {
    for (int64_t i = 0; i < t.numel(); ++i) {
      const float r = bf16_to_float(float_to_bf16(t[i]));
      changed += r != t[i];
      t[i] = r;
    }
  });
  EXPECT_GT(changed, 1000);  // bf16 really rounded the weights
  std::map<std::string, const Tensor*> loaded_of;
  bf16.params.visit([&](const std::string& n, Tensor& t) { loaded_of[n] = &t; });
  rounded.params.visit([&](const std::string& n, Tensor& t) {
    for (int64_t i = 0; i < t.numel(); ++i) ASSERT_EQ((*loaded_of.at(n))[i], t[i]) << n << "[" << i << "]";
  });
  ModelState want;
  model_forward(rounded, ids.data(), 1, 12, want);
  model_forward(bf16, ids.data(), 1, 12, got);
  for (int64_t i = 0; i < want.logits.numel(); ++i) ASSERT_EQ(want.logits[i], got.logits[i]) << i;
  std::filesystem::remove_all(dir);
}

TEST(Checkpoint, MissingOrMisshapenTensorNamesIt) {
  const ModelConfig cfg = tiny_config(AttentionKind::MLA);
  Model m = init_model(cfg, 1);
  const auto dir = std::filesystem::temp_directory_path() / ("memoe_bad_" + std::to_string(::getpid()));
  m.params.layers[1].attn.kv_b_proj.resize({3, 3});
  save_model(m, dir.string());
  try {
    load_model(dir.string());
    FAIL() << "loaded a misshapen tensor";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers.1.self_attn.kv_b_proj.weight"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(dir);
}

// Found by fuzz/model_dir_fuzz: a small model directory whose config asks for
// a vast vocabulary was allocated whole (29 s, 3.9 GB) before it was refused.
TEST(Checkpoint, AbsurdConfigBesideASmallFileIsRefusedBeforeAllocating) {
  const ModelConfig cfg = tiny_config(AttentionKind::MLA);
  const Model m = init_model(cfg, 1);
  const auto dir = std::filesystem::temp_directory_path() / ("memoe_vast_" + std::to_string(::getpid()));
  save_model(m, dir.string());
  ModelConfig vast = cfg;
  vast.intermediate_size = 1000000;  // within the config limits; dense FFN: 3e6 x hidden_size floats
  std::ofstream(dir / "config.json") << config_to_json(vast);
  try {
    load_model(dir.string());
    FAIL() << "loaded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("far fewer than the"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(dir);
}

// Found by fuzz/model_dir_fuzz: stored table sizes were only checked to be
// positive, so two huge ones overflowed the row count (UB) and could ask for
// any table. The stored hash must be the one the config and token map give.
TEST(Checkpoint, StoredEngramHashMustBeTheConfigsOwn) {
  const ModelConfig cfg = tiny_config(AttentionKind::MLA);
  const int l = cfg.engram->layer_ids[0];
  for (int which = 0; which < 2; ++which) {
    Model m = init_model(cfg, 1);
    if (which == 0) {
      m.engram_hash[size_t(l)].primes[0] = 8387230137432832773;
      m.engram_hash[size_t(l)].primes[1] = 2476803192246068321;
    } else {
      m.engram_hash[size_t(l)].multipliers[1] += 2;
    }
    const auto dir = std::filesystem::temp_directory_path() / ("memoe_hash_" + std::to_string(::getpid()));
    save_model(m, dir.string());
    try {
      load_model(dir.string());
      ADD_FAILURE() << "loaded a foreign hash";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(which == 0 ? "table_sizes are not" : "hash_multipliers are not"),
                std::string::npos)
          << e.what();
    }
    std::filesystem::remove_all(dir);
  }
}

TEST(Model, TokenIdOutsideVocabularyIsAnError) {
  const ModelConfig cfg = tiny_config(AttentionKind::MLA);
  Model m = init_model(cfg, 1);
  std::vector<int64_t> ids = {1, 2, cfg.vocab_size};
  ModelState s;
  EXPECT_THROW(model_forward(m, ids.data(), 1, 3, s), Error);
}

}  // namespace
}  // namespace memoe
