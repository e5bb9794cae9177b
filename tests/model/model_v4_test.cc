// DeepSeek-V4 models end to end (mHC streams, V4 attention, V4 routing):
// finite-difference gradients of every tensor, hc_mult 1 as the plain
// residual, the initialisation as the identity-like map, and checkpoints in
// the release's names.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>

#include "core/error.h"
#include "core/rng.h"
#include "grad_check.h"
#include "random_ids.h"
#include "kernels/embedding.h"
#include "kernels/linear.h"
#include "kernels/norm.h"
#include "model/checkpoint.h"
#include "model/inference.h"
#include "model/init.h"
#include "model/model.h"
#include "model/rope.h"
#include "io/npy.h"

namespace memoe {
namespace {

ModelConfig tiny_v4(int hc_mult) {
  const std::string json = R"({"model_type": "deepseek_v4", "vocab_size": 40, "hidden_size": 16,
    "num_hidden_layers": 2, "num_attention_heads": 2, "head_dim": 8, "qk_rope_head_dim": 4, "q_lora_rank": 8,
    "o_lora_rank": 4, "o_groups": 2, "sliding_window": 3, "moe_intermediate_size": 6, "n_routed_experts": 4,
    "num_experts_per_tok": 2, "num_hash_layers": 1, "swiglu_limit": 1.5, "routed_scaling_factor": 1.5,
    "hc_sinkhorn_iters": 20, "num_nextn_predict_layers": 0, "rope_theta": 100.0, "rope_scaling": null,
    "max_position_embeddings": 64, "hc_mult": )" + std::to_string(hc_mult) + "}";
  return parse_config(json, "tiny v4");
}

// Every tensor of O(1) effect (a fresh init's gating factors of 0.01 would
// hide a missing term); the combination's biases keep a diagonal lean.
Model random_v4_model(const ModelConfig& cfg, uint64_t seed) {
  Model m = init_model(cfg, seed);
  Rng rng(seed + 1);
  m.params.visit([&](const std::string& name, Tensor& t) {
    const bool norm = name.find("norm") != std::string::npos, scale = name.find("_scale") != std::string::npos;
    const bool base = name.find("_base") != std::string::npos, bias = name.find("gate.bias") != std::string::npos;
    for (int64_t i = 0; i < t.numel(); ++i) {
      const double z = rng.normal();
      t[i] = norm    ? float(1.0 + 0.1 * z)
             : scale ? float(0.5 + 0.2 * z)
             : base  ? t[i] + float(0.5 * z)
             : bias  ? float(0.05 * z)
                     : float(0.3 * z);
    }
  });
  return m;
}

using testing::random_ids;

std::vector<int32_t> routing(const ModelState& s) {
  std::vector<int32_t> r;
  for (const LayerState& l : s.layers) r.insert(r.end(), l.moe.expert_ids.begin(), l.moe.expert_ids.end());
  return r;
}

void expect_gradients_match(int hc_mult) {
  const ModelConfig cfg = tiny_v4(hc_mult);
  const int64_t B = 2, L = 7;
  const auto ids = random_ids(cfg, B * L, 3);
  const auto targets = next_token_targets(ids.data(), B, L);
  Model m = random_v4_model(cfg, 5);
  ModelState state;
  ModelParams grads = m.make_gradients();
  const double base_loss = model_loss_and_grad(m, ids.data(), targets.data(), B, L, state, &grads);
  const std::vector<int32_t> base_routing = routing(state);
  bool same_routing = true;
  auto loss = [&] {
    ModelState s;
    const double v = model_loss_and_grad(m, ids.data(), targets.data(), B, L, s, nullptr);
    same_routing = same_routing && routing(s) == base_routing;
    return v;
  };
  testing::GradCheckOptions opts;
  opts.samples = 16;
  opts.h = 1e-3f;  // small: the experts' clamps are kinks
  opts.rtol = 3e-2;
  opts.atol = std::ldexp(std::fabs(base_loss), -23) / double(opts.h) * 4;
  opts.smooth_here = [&] {
    const bool ok = same_routing;
    same_routing = true;
    return ok;
  };
  std::map<std::string, Tensor*> analytic;
  grads.visit([&](const std::string& name, Tensor& g) { analytic[name] = &g; });
  int checked = 0, mhc = 0;
  m.params.visit([&](const std::string& name, Tensor& w) {
    if (name.find("gate.bias") != std::string::npos) return;  // selection only
    opts.require_nonzero = name.find(".experts.") == std::string::npos;  // an expert may get no token
    expect_gradient_matches(name, w.data(), w.numel(), analytic.at(name)->data(), loss, opts);
    ++checked;
    mhc += name.find("hc_") != std::string::npos;
  });
  EXPECT_GT(checked, 40);
  EXPECT_EQ(mhc, hc_mult > 1 ? 2 * 2 * 3 + 3 : 0);
}

TEST(ModelV4, GradientsMatchFiniteDifferencesWithMhc) { expect_gradients_match(4); }
TEST(ModelV4, GradientsMatchFiniteDifferencesWithOneStream) { expect_gradients_match(1); }

TEST(ModelV4, OneStreamIsThePlainResidual) {
  // hc_mult 1: h += attention(norm(h)); h += moe(norm(h)), then norm and head.
  const ModelConfig cfg = tiny_v4(1);
  const Model m = random_v4_model(cfg, 9);
  const int64_t L = 6, N = L, d = cfg.hidden_size, V = cfg.vocab_size;
  const auto ids = random_ids(cfg, N, 4);
  ModelState state;
  model_forward(m, ids.data(), 1, L, state);
  std::vector<float> h(static_cast<size_t>(N * d)), x(h.size()), y(h.size()), rstd(static_cast<size_t>(N));
  embedding_forward(m.params.embed_tokens, ids.data(), N, d, h.data());
  const RopeTable rope = make_model_rope_table(cfg, L);
  for (int l = 0; l < cfg.num_hidden_layers; ++l) {
    const LayerParams& p = m.params.layers[size_t(l)];
    AttentionCache ac;
    MoECache mc;
    rmsnorm_forward(h.data(), p.input_layernorm.data(), 1e-6f, N, d, x.data(), rstd.data());
    attention_block_forward(cfg, rope, p.attn, x.data(), 1, L, ac, y.data());
    for (size_t i = 0; i < h.size(); ++i) h[i] += y[i];
    rmsnorm_forward(h.data(), p.post_attention_layernorm.data(), 1e-6f, N, d, x.data(), rstd.data());
    moe_forward(cfg, p.moe, x.data(), 1, L, mc, y.data(), nullptr, l, ids.data());
    for (size_t i = 0; i < h.size(); ++i) h[i] += y[i];
  }
  rmsnorm_forward(h.data(), m.params.norm.data(), 1e-6f, N, d, x.data(), rstd.data());
  std::vector<float> logits(size_t(N * V));
  linear_forward(x.data(), m.params.lm_head, nullptr, N, d, V, logits.data());
  for (size_t i = 0; i < logits.size(); ++i) ASSERT_EQ(state.logits[int64_t(i)], logits[i]) << i;
  std::vector<std::string> names;
  const_cast<ModelParams&>(m.params).visit([&](const std::string& n, Tensor&) { names.push_back(n); });
  for (const std::string& n : names) EXPECT_EQ(n.find("hc_"), std::string::npos) << n;
}

TEST(ModelV4, FreshMixesAreTheIdentityLikeMap) {
  // At initialisation (pre 1/n, post 1, combination 0.99 on the diagonal,
  // gating 0.01) four streams carry what one plain residual would: the same
  // weights give nearly the same logits with hc_mult 4 and 1.
  const ModelConfig four = tiny_v4(4), one = tiny_v4(1);
  const Model m4 = init_model(four, 21);
  Model m1 = init_model(one, 21);
  std::map<std::string, const Tensor*> shared;
  const_cast<ModelParams&>(m4.params).visit([&](const std::string& n, Tensor& t) { shared[n] = &t; });
  m1.params.visit([&](const std::string& n, Tensor& t) { t = *shared.at(n); });
  for (size_t l = 0; l < m1.params.layers.size(); ++l) m1.params.layers[l].moe.tid2eid = m4.params.layers[l].moe.tid2eid;
  const auto ids = random_ids(four, 12, 6);
  ModelState s4, s1;
  model_forward(m4, ids.data(), 1, 12, s4);
  model_forward(m1, ids.data(), 1, 12, s1);
  double diff = 0, norm = 0;
  for (int64_t i = 0; i < s1.logits.numel(); ++i) {
    diff += std::pow(double(s4.logits[i] - s1.logits[i]), 2);
    norm += std::pow(double(s1.logits[i]), 2);
  }
  EXPECT_LT(std::sqrt(diff / norm), 1e-2);
  EXPECT_GT(diff, 0.0);  // and they are four streams, not one
}

TEST(ModelV4, CheckpointUsesTheReleasesNamesAndRoundTrips) {
  const ModelConfig cfg = tiny_v4(4);
  const Model m = random_v4_model(cfg, 31);
  const std::string dir = ::testing::TempDir() + "/memoe_v4_ckpt";
  std::filesystem::remove_all(dir);
  save_model(m, dir);
  const Model back = load_model(dir);
  EXPECT_EQ(back.params.layers[0].moe.tid2eid, m.params.layers[0].moe.tid2eid);
  const auto ids = random_ids(cfg, 9, 8);
  ModelState a, b;
  model_forward(m, ids.data(), 1, 9, a);
  model_forward(back, ids.data(), 1, 9, b);
  for (int64_t i = 0; i < a.logits.numel(); ++i) ASSERT_EQ(a.logits[i], b.logits[i]);
  const SafetensorsSet f = SafetensorsSet::open(dir, "model");
  for (const char* name : {"embed.weight", "head.weight", "norm.weight", "hc_head_fn", "layers.0.hc_attn_base",
                           "layers.1.hc_ffn_scale", "layers.0.attn.wq_a.weight", "layers.0.attn.attn_sink",
                           "layers.0.ffn.gate.tid2eid", "layers.1.ffn.gate.bias", "layers.1.ffn.experts.3.w2.weight",
                           "layers.0.ffn.shared_experts.w1.weight", "layers.1.attn_norm.weight"})
    EXPECT_TRUE(f.has(name)) << name;
  EXPECT_FALSE(f.has("model.engram_token_map"));  // the release's tensors only
  EXPECT_EQ(f.info("layers.0.ffn.gate.tid2eid").dtype, DType::I64);
  std::filesystem::remove_all(dir);
}

TEST(ModelV4, CachedDecodeIsTheFullForwardAndItsCacheDoesNotGrow) {
  // The window (3) is far shorter than the context (30): the ring of window
  // keys must hold what the full forward's window sees, in chunks of any size.
  for (int hc_mult : {4, 1}) {
    const ModelConfig cfg = tiny_v4(hc_mult);
    const Model m = random_v4_model(cfg, 41);
    const int64_t L = 30, V = cfg.vocab_size;
    const auto ids = random_ids(cfg, L, 9);
    ModelState full;
    model_forward(m, ids.data(), 1, L, full);
    for (int64_t chunk : {1, 4, 30}) {
      SequenceState seq = new_sequence(m);
      Tensor logits;
      std::vector<int64_t> bytes;
      for (int64_t at = 0; at < L; at += chunk) {
        const int64_t n = std::min(chunk, L - at);
        feed_tokens(m, seq, ids.data() + at, n, n, Logits::All, logits);
        for (int64_t i = 0; i < n; ++i)
          for (int64_t v = 0; v < V; ++v)
            ASSERT_NEAR(logits[i * V + v], full.logits[(at + i) * V + v], 2e-5)
                << "hc_mult " << hc_mult << ", chunk " << chunk << ", position " << at + i;
        bytes.push_back(seq.cache_bytes());
      }
      // A ring of window keys a layer, whatever the length.
      EXPECT_EQ(bytes.back(), int64_t(sizeof(float)) * cfg.num_hidden_layers * 3 * cfg.head_dim);
      EXPECT_EQ(bytes.front(), bytes.back());
    }
  }
}

TEST(ModelV4, LogitsAreThoseOfDeepSeeksOwnCode) {
  // tests/fixtures/v4_deepseek: logits DeepSeek's released inference code
  // computed on these weights in fp32 (its README says how).
  const std::string dir = std::string(MEMOE_SOURCE_DIR) + "/tests/fixtures/v4_deepseek";
  const Model m = load_model(dir);
  const std::vector<int64_t> ids = read_npy(dir + "/ids.npy").to_i64();
  const Tensor want = read_npy(dir + "/logits.npy").to_tensor();
  const int64_t L = int64_t(ids.size());
  ASSERT_GT(L, m.config.v4->sliding_window);  // the window is passed
  ModelState s;
  model_forward(m, ids.data(), 1, L, s);
  ASSERT_EQ(want.numel(), s.logits.numel());
  double err = 0, scale = 0;
  for (int64_t i = 0; i < want.numel(); ++i) {
    err = std::max(err, double(std::fabs(want[i] - s.logits[i])));
    scale = std::max(scale, double(std::fabs(want[i])));
  }
  EXPECT_LT(err, 1e-4 * scale) << "max |memoe - DeepSeek| " << err << " over logits up to " << scale;
  // Decode too.
  SequenceState seq = new_sequence(m);
  Tensor logits;
  feed_tokens(m, seq, ids.data(), L, 5, Logits::All, logits);
  for (int64_t i = 0; i < want.numel(); ++i) ASSERT_NEAR(logits[i], want[i], 1e-4 * scale) << i;
}

TEST(ModelV4, PipelineStagesAreRefusedInOneLine) {
  const ModelConfig cfg = tiny_v4(4);
  Model m = init_model(cfg, 1);
  m.params.hold_layers(0, 1, true, false);
  const auto ids = random_ids(cfg, 4, 1);
  ModelState s;
  try {
    model_forward(m, ids.data(), 1, 4, s);
    ADD_FAILURE() << "ran a pipeline stage";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("pipeline stages of DeepSeek-V4 models"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace memoe
