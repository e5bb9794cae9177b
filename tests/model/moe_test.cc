#include "model/moe.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "core/error.h"
#include "grad_check.h"
#include "thread_counts.h"

namespace memoe {
namespace {

using memoe::testing::expect_gradient_matches;
using memoe::testing::random_vector;
using memoe::testing::weighted_sum;

struct Options {
  ScoringFunc scoring = ScoringFunc::Sigmoid;
  bool norm = true;
  int n_group = 1, topk_group = 1;
  int n_shared = 1;
  double alpha = 0.0;
};

ModelConfig small_config(const Options& o) {
  ModelConfig c;
  c.hidden_size = 8;
  c.moe_intermediate_size = 6;
  c.n_routed_experts = 8;
  c.num_experts_per_tok = 2;
  c.n_shared_experts = o.n_shared;
  c.n_group = o.n_group;
  c.topk_group = o.topk_group;
  c.scoring_func = o.scoring;
  c.norm_topk_prob = o.norm;
  c.routed_scaling_factor = 1.5;
  c.seq_aux_loss_alpha = o.alpha;
  return c;
}

// Random parameters; the gate is scaled so that logits are O(1).
MoEParams random_params(const ModelConfig& cfg, uint32_t seed, float bias_scale) {
  MoEParams p;
  p.allocate(cfg);
  p.visit("", [&](const std::string& name, Tensor& t) {
    const float scale = name == "gate.weight" ? 0.5f : name == "gate.e_score_correction_bias" ? bias_scale : 0.6f;
    std::vector<float> v = random_vector(t.numel(), seed++, scale);
    std::copy(v.begin(), v.end(), t.data());
  });
  return p;
}

// ---- A plain per-token implementation of spec §4, in double. ----

struct PlainRoute {
  std::vector<int> ids;
  std::vector<double> w;
  double margin = std::numeric_limits<double>::infinity();  // smallest gap of any routing decision
};

std::vector<double> plain_scores(const ModelConfig& c, const MoEParams& p, const float* x) {
  const int E = c.n_routed_experts;
  const int64_t d = c.hidden_size;
  std::vector<double> z(static_cast<size_t>(E)), s(static_cast<size_t>(E));
  for (int e = 0; e < E; ++e)
    for (int64_t i = 0; i < d; ++i) z[e] += double(p.gate[e * d + i]) * x[i];
  if (c.scoring_func == ScoringFunc::Softmax) {
    double zmax = *std::max_element(z.begin(), z.end()), sum = 0.0;
    for (int e = 0; e < E; ++e) sum += std::exp(z[e] - zmax);
    for (int e = 0; e < E; ++e) s[e] = std::exp(z[e] - zmax) / sum;
  } else if (c.scoring_func == ScoringFunc::SqrtSoftplus) {
    for (int e = 0; e < E; ++e) s[e] = std::sqrt(std::log1p(std::exp(z[e])));
  } else {
    for (int e = 0; e < E; ++e) s[e] = 1.0 / (1.0 + std::exp(-z[e]));
  }
  return s;
}

// Indices ordered by value, largest first, lower index first on ties.
std::vector<int> order_desc(const std::vector<double>& v, const std::vector<int>& among) {
  std::vector<int> o = among;
  std::stable_sort(o.begin(), o.end(), [&](int a, int b) { return v[a] > v[b]; });
  return o;
}

PlainRoute plain_route(const ModelConfig& c, const std::vector<double>& s, const Tensor& bias) {
  const int E = c.n_routed_experts, k = c.num_experts_per_tok;
  PlainRoute r;
  std::vector<double> sel(static_cast<size_t>(E));
  for (int e = 0; e < E; ++e) sel[e] = s[e] + bias[e];
  std::vector<int> cand;
  if (c.n_group > 1) {
    const int gs = E / c.n_group;
    std::vector<double> gscore(size_t(c.n_group));
    std::vector<int> groups(size_t(c.n_group));
    std::iota(groups.begin(), groups.end(), 0);
    for (int g = 0; g < c.n_group; ++g) {
      std::vector<double> v(sel.begin() + g * gs, sel.begin() + (g + 1) * gs);
      std::sort(v.rbegin(), v.rend());
      gscore[g] = v[0] + v[1];
    }
    std::vector<int> go = order_desc(gscore, groups);
    if (c.topk_group < c.n_group) r.margin = gscore[go[c.topk_group - 1]] - gscore[go[c.topk_group]];
    std::sort(go.begin(), go.begin() + c.topk_group);
    for (int i = 0; i < c.topk_group; ++i)
      for (int j = 0; j < gs; ++j) cand.push_back(go[i] * gs + j);
  } else {
    cand.resize(static_cast<size_t>(E));
    std::iota(cand.begin(), cand.end(), 0);
  }
  std::vector<int> o = order_desc(sel, cand);
  if (int(o.size()) > k) r.margin = std::min(r.margin, sel[o[k - 1]] - sel[o[k]]);
  double sum = 0.0;
  for (int j = 0; j < k; ++j) {
    r.ids.push_back(o[j]);
    r.w.push_back(s[o[j]]);
    sum += s[o[j]];
  }
  for (double& w : r.w) w = (c.norm_topk_prob ? w / (sum + 1e-20) : w) * c.routed_scaling_factor;
  return r;
}

void plain_swiglu_add(const SwiGLUParams& p, const float* x, double weight, std::vector<double>& y) {
  const int64_t F = p.gate_proj.dim(0), d = p.gate_proj.dim(1);
  for (int64_t f = 0; f < F; ++f) {
    double a = 0.0, b = 0.0;
    for (int64_t i = 0; i < d; ++i) {
      a += double(p.gate_proj[f * d + i]) * x[i];
      b += double(p.up_proj[f * d + i]) * x[i];
    }
    if (p.limit > 0) a = std::min(a, double(p.limit)), b = std::clamp(b, -double(p.limit), double(p.limit));
    const double h = a / (1.0 + std::exp(-a)) * b;
    for (int64_t o = 0; o < d; ++o) y[o] += weight * double(p.down_proj[o * F + f]) * h;
  }
}

std::vector<double> plain_token_forward(const ModelConfig& c, const MoEParams& p, const float* x, PlainRoute* route) {
  const PlainRoute r = plain_route(c, plain_scores(c, p, x), p.e_score_correction_bias);
  std::vector<double> y(size_t(c.hidden_size), 0.0);
  for (size_t j = 0; j < r.ids.size(); ++j) plain_swiglu_add(p.experts[size_t(r.ids[j])], x, r.w[j], y);
  if (c.n_shared_experts > 0) plain_swiglu_add(p.shared, x, 1.0, y);
  if (route) *route = r;
  return y;
}

// Inputs whose every routing decision has a gap of at least min_gap, so that
// the finite-difference perturbation cannot flip one.
std::vector<float> inputs_without_near_ties(const ModelConfig& c, const MoEParams& p, int64_t n, double min_gap) {
  const int64_t d = c.hidden_size;
  for (uint32_t seed = 100; seed < 5100; ++seed) {
    std::vector<float> x = random_vector(n * d, seed);
    double gap = std::numeric_limits<double>::infinity();
    for (int64_t t = 0; t < n; ++t)
      gap = std::min(gap, plain_route(c, plain_scores(c, p, x.data() + t * d), p.e_score_correction_bias).margin);
    if (gap >= min_gap) return x;
  }
  ADD_FAILURE() << "no input without near-ties found";
  return {};
}

// The experts chosen for each token, as sets: the order of the k slots of a
// token is not part of the math, only which experts they hold.
std::vector<int32_t> chosen_sets(std::vector<int32_t> ids, int k) {
  for (size_t t = 0; t < ids.size(); t += size_t(k)) std::sort(ids.begin() + long(t), ids.begin() + long(t) + k);
  return ids;
}

// ---- DeepSeek-V4's MoE ----

// sqrt(softplus) scores, swiglu_limit 0.6 (small, so that many gate and up
// values are clamped), routed scale 1.5; layer 0 routes by token id.
ModelConfig v4_config() {
  return parse_config(R"({"model_type": "deepseek_v4", "vocab_size": 16, "hidden_size": 8, "num_hidden_layers": 2,
    "num_attention_heads": 2, "head_dim": 8, "qk_rope_head_dim": 4, "q_lora_rank": 4, "o_groups": 1,
    "o_lora_rank": 4, "moe_intermediate_size": 6, "n_routed_experts": 8, "num_experts_per_tok": 2,
    "n_shared_experts": 1, "num_hash_layers": 1, "swiglu_limit": 0.6, "routed_scaling_factor": 1.5})",
                      "v4 moe config");
}

MoEParams random_v4_params(const ModelConfig& cfg, int layer, uint32_t seed) {
  MoEParams p;
  p.allocate(cfg, layer);
  p.visit("", [&](const std::string& name, Tensor& t) {
    std::vector<float> v = random_vector(t.numel(), seed++, name == "gate.bias" ? 0.05f : name == "gate.weight" ? 0.5f : 0.6f);
    std::copy(v.begin(), v.end(), t.data());
  });
  if (p.routes_by_token()) p.tid2eid = balanced_token_routing(cfg.vocab_size, cfg.num_experts_per_tok, 8, seed);
  return p;
}

TEST(MoE, V4ScoreRoutedLayerMatchesPlainReferenceAndItsGradients) {
  const ModelConfig cfg = v4_config();
  MoEParams p = random_v4_params(cfg, 1, 60);
  ASSERT_FALSE(p.routes_by_token());
  const int64_t B = 2, L = 5, n = B * L, d = cfg.hidden_size;
  std::vector<float> x = inputs_without_near_ties(cfg, p, n, 0.03);
  std::vector<float> y(size_t(n * d)), r = random_vector(n * d, 61);
  MoECache cache;
  moe_forward(cfg, p, x.data(), B, L, cache, y.data());
  int clamped = 0;
  for (const SwiGLUCache& c : cache.experts)
    for (int64_t i = 0; i < c.a.numel(); ++i) clamped += c.a[i] > 0.6f || std::fabs(c.b[i]) > 0.6f;
  EXPECT_GT(clamped, 10) << "the limit should bite for this test to mean anything";
  for (int64_t t = 0; t < n; ++t) {
    const std::vector<double> want = plain_token_forward(cfg, p, x.data() + t * d, nullptr);
    for (int64_t i = 0; i < d; ++i) EXPECT_NEAR(y[t * d + i], want[i], 1e-4 * (1.0 + std::fabs(want[i])));
  }
  MoEParams grads;
  grads.allocate(cfg, 1);
  std::vector<float> dx(size_t(n * d), 0.0f);
  moe_backward(cfg, p, x.data(), cache, r.data(), B, L, grads, dx.data());
  auto loss = [&]() {
    MoECache c;
    std::vector<float> out(size_t(n * d));
    moe_forward(cfg, p, x.data(), B, L, c, out.data());
    EXPECT_EQ(chosen_sets(c.expert_ids, 2), chosen_sets(cache.expert_ids, 2)) << "a routing decision flipped";
    return weighted_sum(out.data(), r.data(), n * d);
  };
  // A small step: a value within h of the limit would otherwise be moved
  // across the clamp's kink.
  const int samples = 24;
  const float h = 1e-3f;
  expect_gradient_matches("dx", x.data(), n * d, dx.data(), loss, samples, h);
  expect_gradient_matches("gate.weight", p.gate.data(), p.gate.numel(), grads.gate.data(), loss, samples, h);
  const int busy = int(std::max_element(cache.expert_load.begin(), cache.expert_load.end()) - cache.expert_load.begin());
  for (auto [w, g] : {std::pair{&p.experts[size_t(busy)].gate_proj, &grads.experts[size_t(busy)].gate_proj},
                      {&p.experts[size_t(busy)].up_proj, &grads.experts[size_t(busy)].up_proj},
                      {&p.shared.gate_proj, &grads.shared.gate_proj},
                      {&p.shared.up_proj, &grads.shared.up_proj}})
    expect_gradient_matches("expert weights", w->data(), w->numel(), g->data(), loss, samples, h);
}

TEST(MoE, V4TokenRoutedLayerFollowsTid2eidWhateverTheScores) {
  const ModelConfig cfg = v4_config();
  MoEParams p = random_v4_params(cfg, 0, 70);
  ASSERT_TRUE(p.routes_by_token());
  EXPECT_TRUE(p.e_score_correction_bias.empty());  // no bias: nothing to balance
  const int64_t B = 2, L = 6, n = B * L, d = cfg.hidden_size, k = 2;
  std::vector<int64_t> ids(static_cast<size_t>(n));
  for (int64_t t = 0; t < n; ++t) ids[size_t(t)] = (t * 5) % cfg.vocab_size;
  std::vector<float> x = random_vector(n * d, 71), y(size_t(n * d)), r = random_vector(n * d, 72);
  MoECache cache;
  moe_forward(cfg, p, x.data(), B, L, cache, y.data(), nullptr, 0, ids.data());
  for (int64_t t = 0; t < n; ++t) {
    const std::vector<double> s = plain_scores(cfg, p, x.data() + t * d);
    const int32_t* row = p.tid2eid.data() + ids[size_t(t)] * k;
    const double sum = s[size_t(row[0])] + s[size_t(row[1])];
    for (int j = 0; j < k; ++j) {
      EXPECT_EQ(cache.expert_ids[size_t(t * k + j)], row[j]);
      EXPECT_NEAR(cache.weights[size_t(t * k + j)], 1.5 * s[size_t(row[j])] / sum, 1e-5);
    }
  }
  // The scores still weight the fixed choice, so the gate gets a gradient;
  // no perturbation can flip a choice here.
  MoEParams grads;
  grads.allocate(cfg, 0);
  std::vector<float> dx(size_t(n * d), 0.0f);
  moe_backward(cfg, p, x.data(), cache, r.data(), B, L, grads, dx.data());
  auto loss = [&]() {
    MoECache c;
    std::vector<float> out(size_t(n * d));
    moe_forward(cfg, p, x.data(), B, L, c, out.data(), nullptr, 0, ids.data());
    return weighted_sum(out.data(), r.data(), n * d);
  };
  expect_gradient_matches("dx", x.data(), n * d, dx.data(), loss);
  expect_gradient_matches("gate.weight", p.gate.data(), p.gate.numel(), grads.gate.data(), loss);
  try {
    moe_forward(cfg, p, x.data(), B, L, cache, y.data());
    ADD_FAILURE() << "routed by token without the ids";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("needs the token ids"), std::string::npos) << e.what();
  }
}

TEST(MoE, V4NamesAreTheReleases) {
  const ModelConfig cfg = v4_config();
  for (int layer : {0, 1}) {
    MoEParams p;
    p.allocate(cfg, layer);
    std::vector<std::string> names;
    p.visit("layers.4.ffn.", [&](const std::string& name, Tensor&) { names.push_back(name); });
    EXPECT_EQ(names[0], "layers.4.ffn.gate.weight");
    EXPECT_EQ(names[1], layer == 0 ? "layers.4.ffn.experts.0.w1.weight" : "layers.4.ffn.gate.bias");
    EXPECT_EQ(names.back(), "layers.4.ffn.shared_experts.w2.weight");
    EXPECT_EQ(routed_expert_of("layers.4.ffn.experts.7.w3.weight"), 7);
    EXPECT_EQ(routed_expert_of("layers.4.ffn.shared_experts.w3.weight"), -1);
  }
}

// ---- Tests ----

void expect_matches_plain(const Options& o, uint32_t seed) {
  const ModelConfig cfg = small_config(o);
  // A large bias (scale 1 against scores in (0, 1)) changes most choices.
  MoEParams p = random_params(cfg, seed, 1.0f);
  const int64_t B = 3, L = 7, n = B * L, d = cfg.hidden_size;
  std::vector<float> x = random_vector(n * d, seed + 50);
  std::vector<float> y(size_t(n * d));
  MoECache cache;
  moe_forward(cfg, p, x.data(), B, L, cache, y.data());

  MoEParams unbiased = p;
  unbiased.e_score_correction_bias.zero();
  int changed = 0;
  for (int64_t t = 0; t < n; ++t) {
    PlainRoute r, r0;
    std::vector<double> want = plain_token_forward(cfg, p, x.data() + t * d, &r);
    plain_token_forward(cfg, unbiased, x.data() + t * d, &r0);
    changed += r.ids != r0.ids;
    for (int j = 0; j < cfg.num_experts_per_tok; ++j) {
      EXPECT_EQ(cache.expert_ids[size_t(t * cfg.num_experts_per_tok + j)], r.ids[size_t(j)]) << "token " << t;
      EXPECT_NEAR(cache.weights[size_t(t * cfg.num_experts_per_tok + j)], r.w[size_t(j)], 1e-5) << "token " << t;
    }
    for (int64_t i = 0; i < d; ++i) EXPECT_NEAR(y[t * d + i], want[i], 1e-4 * (1.0 + std::fabs(want[i])));
  }
  EXPECT_GT(changed, n / 3) << "the bias should change the selection for this test to mean anything";
}

TEST(MoE, ForwardMatchesPlainReferenceSigmoidNorm) { expect_matches_plain({}, 1); }
TEST(MoE, ForwardMatchesPlainReferenceSoftmaxNoNorm) {
  expect_matches_plain({.scoring = ScoringFunc::Softmax, .norm = false}, 2);
}
TEST(MoE, ForwardMatchesPlainReferenceGroupLimited) {
  expect_matches_plain({.n_group = 4, .topk_group = 2}, 3);
  expect_matches_plain({.n_group = 2, .topk_group = 1}, 5);  // one kept group of 4
}
TEST(MoE, ForwardMatchesPlainReferenceWithoutSharedExperts) { expect_matches_plain({.n_shared = 0}, 4); }

void check_gradients(const Options& o, uint32_t seed, bool loss_is_aux_only = false) {
  const ModelConfig cfg = small_config(o);
  MoEParams p = random_params(cfg, seed, 0.05f);
  const int64_t B = 2, L = 5, n = B * L, d = cfg.hidden_size;
  std::vector<float> x = inputs_without_near_ties(cfg, p, n, 0.03);
  ASSERT_EQ(int64_t(x.size()), n * d);
  std::vector<float> r = loss_is_aux_only ? std::vector<float>(size_t(n * d), 0.0f) : random_vector(n * d, seed + 7);
  std::vector<float> y(size_t(n * d));
  MoECache cache;
  moe_forward(cfg, p, x.data(), B, L, cache, y.data());
  if (o.alpha > 0) {
    EXPECT_GT(cache.aux_loss, 0.0);
  }

  MoEParams grads;
  grads.allocate(cfg);
  std::vector<float> dx(size_t(n * d), 0.0f);
  moe_backward(cfg, p, x.data(), cache, r.data(), B, L, grads, dx.data());

  const int k = cfg.num_experts_per_tok;
  auto loss = [&]() {
    MoECache c;
    std::vector<float> out(size_t(n * d));
    moe_forward(cfg, p, x.data(), B, L, c, out.data());
    EXPECT_EQ(chosen_sets(c.expert_ids, k), chosen_sets(cache.expert_ids, k))
        << "the perturbation flipped a routing decision";
    return weighted_sum(out.data(), r.data(), n * d) + c.aux_loss;
  };
  expect_gradient_matches("dx", x.data(), n * d, dx.data(), loss);
  expect_gradient_matches("gate.weight", p.gate.data(), p.gate.numel(), grads.gate.data(), loss);
  for (int64_t e = 0; e < cfg.n_routed_experts; ++e) EXPECT_EQ(grads.e_score_correction_bias[e], 0.0f);
  if (loss_is_aux_only) return;

  // The busiest expert, and the shared experts.
  const int busy = int(std::max_element(cache.expert_load.begin(), cache.expert_load.end()) - cache.expert_load.begin());
  SwiGLUParams& ex = p.experts[size_t(busy)];
  SwiGLUParams& gx = grads.experts[size_t(busy)];
  expect_gradient_matches("expert gate_proj", ex.gate_proj.data(), ex.gate_proj.numel(), gx.gate_proj.data(), loss);
  expect_gradient_matches("expert up_proj", ex.up_proj.data(), ex.up_proj.numel(), gx.up_proj.data(), loss);
  expect_gradient_matches("expert down_proj", ex.down_proj.data(), ex.down_proj.numel(), gx.down_proj.data(), loss);
  if (cfg.n_shared_experts > 0) {
    expect_gradient_matches("shared gate_proj", p.shared.gate_proj.data(), p.shared.gate_proj.numel(),
                            grads.shared.gate_proj.data(), loss);
    expect_gradient_matches("shared down_proj", p.shared.down_proj.data(), p.shared.down_proj.numel(),
                            grads.shared.down_proj.data(), loss);
  }
}

TEST(MoE, GradientsSigmoidNorm) { check_gradients({}, 10); }
TEST(MoE, GradientsSoftmaxNoNorm) { check_gradients({.scoring = ScoringFunc::Softmax, .norm = false}, 20); }
TEST(MoE, GradientsSoftmaxNorm) { check_gradients({.scoring = ScoringFunc::Softmax, .norm = true}, 25); }
TEST(MoE, GradientsGroupLimited) { check_gradients({.n_group = 4, .topk_group = 2}, 30); }
TEST(MoE, GradientsWithBalanceLoss) { check_gradients({.alpha = 0.5}, 40); }
TEST(MoE, GradientsOfBalanceLossAlone) { check_gradients({.alpha = 0.5}, 50, true); }
TEST(MoE, GradientsOfBalanceLossAloneSoftmax) {
  check_gradients({.scoring = ScoringFunc::Softmax, .norm = false, .alpha = 0.5}, 60, true);
}

TEST(MoE, ExpertLoadCountsEveryRoutedToken) {
  const ModelConfig cfg = small_config({.n_group = 2, .topk_group = 1});
  MoEParams p = random_params(cfg, 5, 0.2f);
  const int64_t B = 3, L = 11, n = B * L, d = cfg.hidden_size;
  std::vector<float> x = random_vector(n * d, 6), y(size_t(n * d));
  MoECache cache;
  moe_forward(cfg, p, x.data(), B, L, cache, y.data());
  ASSERT_EQ(cache.expert_load.size(), size_t(cfg.n_routed_experts));
  EXPECT_EQ(std::accumulate(cache.expert_load.begin(), cache.expert_load.end(), int64_t(0)),
            n * cfg.num_experts_per_tok);
  std::vector<int64_t> counted(size_t(cfg.n_routed_experts), 0);
  for (int32_t id : cache.expert_ids) ++counted[size_t(id)];
  EXPECT_EQ(cache.expert_load, counted);
}

TEST(MoE, BackwardAddsIntoGradients) {
  const ModelConfig cfg = small_config({});
  MoEParams p = random_params(cfg, 8, 0.1f);
  const int64_t B = 1, L = 6, n = B * L, d = cfg.hidden_size;
  std::vector<float> x = random_vector(n * d, 9), y(size_t(n * d)), dy = random_vector(n * d, 10);
  MoECache cache;
  moe_forward(cfg, p, x.data(), B, L, cache, y.data());
  MoEParams once, twice;
  once.allocate(cfg);
  twice.allocate(cfg);
  std::vector<float> dx1(size_t(n * d), 0.0f), dx2(size_t(n * d), 0.0f);
  moe_backward(cfg, p, x.data(), cache, dy.data(), B, L, once, dx1.data());
  moe_backward(cfg, p, x.data(), cache, dy.data(), B, L, twice, dx2.data());
  moe_backward(cfg, p, x.data(), cache, dy.data(), B, L, twice, dx2.data());
  for (int64_t i = 0; i < n * d; ++i) EXPECT_NEAR(dx2[i], 2.0f * dx1[i], 1e-5f + 1e-5f * std::fabs(dx1[i]));
  for (int64_t i = 0; i < p.gate.numel(); ++i)
    EXPECT_NEAR(twice.gate[i], 2.0f * once.gate[i], 1e-5f + 1e-5f * std::fabs(once.gate[i]));
  for (int64_t i = 0; i < p.shared.down_proj.numel(); ++i)
    EXPECT_NEAR(twice.shared.down_proj[i], 2.0f * once.shared.down_proj[i], 1e-5f);
}

// With single-threaded BLAS the experts run side by side on OpenMP threads;
// that path must give the same numbers as running them in turn.
// On one thread the experts run in turn; on two or three they run side by
// side (one expert per thread, each product single-threaded inside the
// parallel region). Both must give bitwise the same outputs and gradients:
// a buffer shared between experts, or a write outside an expert's own rows,
// passes on one thread and fails here.
TEST(MoE, ExpertsSideBySideMatchExpertsInTurn) {
  const ModelConfig cfg = small_config({.alpha = 0.2});
  MoEParams p = random_params(cfg, 12, 0.1f);
  const int64_t B = 4, L = 16, n = B * L, d = cfg.hidden_size;
  std::vector<float> x = random_vector(n * d, 13), dy = random_vector(n * d, 14);
  testing::expect_same_bits_for_thread_counts("moe forward and backward", [&] {
    MoECache cache;
    MoEParams grads;
    grads.allocate(cfg);
    std::vector<float> y(size_t(n * d), 0.0f), dx(size_t(n * d), 0.0f);
    moe_forward(cfg, p, x.data(), B, L, cache, y.data());
    moe_backward(cfg, p, x.data(), cache, dy.data(), B, L, grads, dx.data());
    std::vector<float> all = y;
    all.insert(all.end(), dx.begin(), dx.end());
    auto append = [&](const Tensor& t) { all.insert(all.end(), t.data(), t.data() + t.numel()); };
    append(grads.gate);
    for (const SwiGLUParams* e : {&grads.shared, &grads.experts[0], &grads.experts[5]}) {
      append(e->gate_proj);
      append(e->up_proj);
      append(e->down_proj);
    }
    for (const SwiGLUParams& e : grads.experts) append(e.down_proj);
    return all;
  });
}

TEST(MoE, VisitNamesFollowTheCheckpointLayout) {
  ModelConfig cfg = small_config({});
  MoEParams p;
  p.allocate(cfg);
  std::vector<std::string> names;
  p.visit("model.layers.3.mlp.", [&](const std::string& name, Tensor&) { names.push_back(name); });
  ASSERT_EQ(names.size(), size_t(2 + 3 * cfg.n_routed_experts + 3));
  EXPECT_EQ(names[0], "model.layers.3.mlp.gate.weight");
  EXPECT_EQ(names[1], "model.layers.3.mlp.gate.e_score_correction_bias");
  EXPECT_EQ(names[2], "model.layers.3.mlp.experts.0.gate_proj.weight");
  EXPECT_EQ(names[3 * 7 + 4], "model.layers.3.mlp.experts.7.down_proj.weight");
  EXPECT_EQ(names.back(), "model.layers.3.mlp.shared_experts.down_proj.weight");
  EXPECT_EQ(p.shared.width(), cfg.moe_intermediate_size);

  cfg.n_shared_experts = 0;
  p.allocate(cfg);
  names.clear();
  p.visit("", [&](const std::string& name, Tensor&) { names.push_back(name); });
  EXPECT_EQ(names.size(), size_t(2 + 3 * cfg.n_routed_experts));
  cfg.n_shared_experts = 2;
  p.allocate(cfg);
  EXPECT_EQ(p.shared.width(), 2 * cfg.moe_intermediate_size);
}

TEST(MoE, CorrectionBiasMovesTowardTheMeanLoad) {
  Tensor bias({4});
  bias[2] = 0.5f;
  update_correction_bias({5, 1, 3, 3}, 1e-3, bias);
  EXPECT_FLOAT_EQ(bias[0], -1e-3f);  // overloaded: less likely to be chosen
  EXPECT_FLOAT_EQ(bias[1], 1e-3f);
  EXPECT_FLOAT_EQ(bias[2], 0.5f);
  EXPECT_FLOAT_EQ(bias[3], 0.0f);
  EXPECT_THROW(update_correction_bias({1, 2}, 1e-3, bias), Error);
}

TEST(MoE, EmptyBatchIsFine) {
  const ModelConfig cfg = small_config({.alpha = 0.1});
  MoEParams p = random_params(cfg, 3, 0.1f), grads;
  grads.allocate(cfg);
  MoECache cache;
  float y = 0.0f, dx = 0.0f;
  moe_forward(cfg, p, &y, 0, 4, cache, &y);
  EXPECT_EQ(std::accumulate(cache.expert_load.begin(), cache.expert_load.end(), int64_t(0)), 0);
  EXPECT_EQ(cache.aux_loss, 0.0);
  moe_backward(cfg, p, &y, cache, &y, 0, 4, grads, &dx);
}

TEST(MoE, BadInputIsAnError) {
  const ModelConfig cfg = small_config({});
  MoEParams p = random_params(cfg, 3, 0.1f);
  const int64_t n = 4, d = cfg.hidden_size;
  std::vector<float> x = random_vector(n * d, 4), y(size_t(n * d)), dx(size_t(n * d));
  MoECache cache;
  MoEParams wrong = p;
  wrong.gate.resize({3, d});
  EXPECT_THROW(moe_forward(cfg, wrong, x.data(), 1, n, cache, y.data()), Error);
  wrong = p;
  wrong.experts.pop_back();
  EXPECT_THROW(moe_forward(cfg, wrong, x.data(), 1, n, cache, y.data()), Error);
  ModelConfig bad = cfg;
  bad.num_experts_per_tok = 9;
  EXPECT_THROW(moe_forward(bad, p, x.data(), 1, n, cache, y.data()), Error);

  moe_forward(cfg, p, x.data(), 1, n, cache, y.data());
  MoEParams unallocated;
  EXPECT_THROW(moe_backward(cfg, p, x.data(), cache, y.data(), 1, n, unallocated, dx.data()), Error);
  MoEParams grads;
  grads.allocate(cfg);
  EXPECT_THROW(moe_backward(cfg, p, x.data(), cache, y.data(), 2, n / 2, grads, dx.data()), Error);

  x[5] = NAN;
  EXPECT_THROW(moe_forward(cfg, p, x.data(), 1, n, cache, y.data()), Error);
}

}  // namespace
}  // namespace memoe
