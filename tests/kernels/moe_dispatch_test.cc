#include "kernels/moe_dispatch.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>

#include "core/error.h"
#include "grad_check.h"

namespace memoe {
namespace {

using memoe::testing::expect_gradient_matches;
using memoe::testing::random_vector;
using memoe::testing::weighted_sum;

RouterSpec spec_of(int E, int k, int n_group = 1, int topk_group = 1, bool softmax = false, bool norm = true,
                   float scale = 1.0f) {
  RouterSpec s;
  s.n_experts = E;
  s.top_k = k;
  s.n_group = n_group;
  s.topk_group = topk_group;
  s.scoring = softmax ? RouterScoring::Softmax : RouterScoring::Sigmoid;
  s.norm_topk_prob = norm;
  s.routed_scaling_factor = scale;
  return s;
}

std::vector<int32_t> route_ids(const RouterSpec& spec, const std::vector<float>& s, const float* bias = nullptr) {
  const int64_t n = int64_t(s.size()) / spec.n_experts;
  std::vector<int32_t> idx(size_t(n * spec.top_k));
  std::vector<float> w(idx.size());
  route_top_k(spec, s.data(), bias, n, idx.data(), w.data());
  return idx;
}

TEST(MoEDispatch, TopKPicksLargestInDescendingOrder) {
  RouterSpec spec = spec_of(6, 3);
  std::vector<float> s = {0.1f, 0.9f, 0.3f, 0.7f, 0.2f, 0.8f};
  EXPECT_EQ(route_ids(spec, s), (std::vector<int32_t>{1, 5, 3}));
}

TEST(MoEDispatch, TiesGoToTheLowerExpertIndex) {
  RouterSpec spec = spec_of(6, 2);
  std::vector<float> s = {0.2f, 0.5f, 0.5f, 0.1f, 0.5f, 0.5f};
  EXPECT_EQ(route_ids(spec, s), (std::vector<int32_t>{1, 2}));
  std::vector<float> flat(6, 0.25f);
  EXPECT_EQ(route_ids(spec, flat), (std::vector<int32_t>{0, 1}));
}

TEST(MoEDispatch, GroupTiesGoToTheLowerGroupIndex) {
  // Groups {0,1}, {2,3}, {4,5} all score 1.0; one group kept: group 0.
  RouterSpec spec = spec_of(6, 2, 3, 1);
  std::vector<float> s = {0.5f, 0.5f, 0.4f, 0.6f, 0.7f, 0.3f};
  EXPECT_EQ(route_ids(spec, s), (std::vector<int32_t>{0, 1}));
}

TEST(MoEDispatch, GroupLimitNeverPicksFromAMaskedGroup) {
  // The globally best expert 6 sits in group 3 = {6, 7} whose top-2 sum
  // (0.99 + 0.0) loses to groups 0 (1.2) and 1 (1.1).
  RouterSpec spec = spec_of(8, 2, 4, 2);
  std::vector<float> s = {0.6f, 0.6f, 0.55f, 0.55f, 0.5f, 0.4f, 0.99f, 0.0f};
  std::vector<int32_t> idx = route_ids(spec, s);
  EXPECT_EQ(idx, (std::vector<int32_t>{0, 1}));
  // Without the group limit expert 6 would win.
  EXPECT_EQ(route_ids(spec_of(8, 2), s)[0], 6);
}

TEST(MoEDispatch, GroupsAreScoredByTopTwoSumNotMaximum) {
  // Group 0 = {0.9, 0.0} (max 0.9, sum 0.9), group 1 = {0.5, 0.5} (max 0.5, sum 1.0).
  RouterSpec spec = spec_of(4, 1, 2, 1);
  std::vector<float> s = {0.9f, 0.0f, 0.5f, 0.5f};
  EXPECT_EQ(route_ids(spec, s), (std::vector<int32_t>{2}));
}

TEST(MoEDispatch, RandomGroupLimitedRoutingMatchesBruteForce) {
  const int E = 12, k = 3, G = 4, TG = 2, gs = E / G;
  RouterSpec spec = spec_of(E, k, G, TG);
  const int64_t n = 300;
  std::vector<float> s = random_vector(n * E, 7);
  std::vector<float> bias = random_vector(E, 8, 0.3f);
  std::vector<int32_t> idx = route_ids(spec, s, bias.data());
  for (int64_t t = 0; t < n; ++t) {
    std::vector<float> sel(E);
    for (int e = 0; e < E; ++e) sel[e] = s[t * E + e] + bias[e];
    std::vector<std::pair<float, int>> groups;
    for (int g = 0; g < G; ++g) {
      std::vector<float> v(sel.begin() + g * gs, sel.begin() + (g + 1) * gs);
      std::sort(v.rbegin(), v.rend());
      groups.push_back({-(v[0] + v[1]), g});
    }
    std::sort(groups.begin(), groups.end());
    std::vector<std::pair<float, int>> cand;
    for (int i = 0; i < TG; ++i)
      for (int j = 0; j < gs; ++j) cand.push_back({-sel[groups[i].second * gs + j], groups[i].second * gs + j});
    std::sort(cand.begin(), cand.end());
    for (int j = 0; j < k; ++j) {
      EXPECT_EQ(idx[t * k + j], cand[j].second) << "token " << t << " slot " << j;
      const int g = idx[t * k + j] / gs;
      EXPECT_TRUE(g == groups[0].second || g == groups[1].second) << "token " << t << " picked a masked group";
    }
  }
}

TEST(MoEDispatch, WeightsComeFromScoresNotBias) {
  RouterSpec spec = spec_of(4, 2, 1, 1, false, true, 2.5f);
  std::vector<float> s = {0.8f, 0.6f, 0.3f, 0.1f};
  std::vector<float> bias = {0.0f, 0.0f, 1.0f, 2.0f};  // flips the choice to experts 3 and 2
  std::vector<int32_t> idx(2);
  std::vector<float> w(2);
  route_top_k(spec, s.data(), bias.data(), 1, idx.data(), w.data());
  EXPECT_EQ(idx, (std::vector<int32_t>{3, 2}));
  EXPECT_NEAR(w[0], 2.5f * 0.1f / 0.4f, 1e-6);
  EXPECT_NEAR(w[1], 2.5f * 0.3f / 0.4f, 1e-6);
  spec.norm_topk_prob = false;
  route_top_k(spec, s.data(), bias.data(), 1, idx.data(), w.data());
  EXPECT_NEAR(w[0], 2.5f * 0.1f, 1e-6);
  EXPECT_NEAR(w[1], 2.5f * 0.3f, 1e-6);
}

TEST(MoEDispatch, ScoresAreSigmoidOrSoftmax) {
  std::vector<float> z = {0.5f, -1.0f, 2.0f};
  std::vector<float> s(3);
  router_scores(spec_of(3, 1), z.data(), 1, s.data());
  for (int e = 0; e < 3; ++e) EXPECT_NEAR(s[e], 1.0 / (1.0 + std::exp(-z[e])), 1e-6);
  router_scores(spec_of(3, 1, 1, 1, true), z.data(), 1, s.data());
  double sum = std::exp(0.5) + std::exp(-1.0) + std::exp(2.0);
  for (int e = 0; e < 3; ++e) EXPECT_NEAR(s[e], std::exp(double(z[e])) / sum, 1e-6);
}

TEST(MoEDispatch, SqrtSoftplusScoresAndTheirGradient) {
  // V4's scoring, including logits far out on both sides.
  RouterSpec spec = spec_of(6, 2);
  spec.scoring = RouterScoring::SqrtSoftplus;
  std::vector<float> z = {0.5f, -1.0f, 2.0f, -60.0f, 40.0f, 0.0f};
  std::vector<float> s(6);
  router_scores(spec, z.data(), 1, s.data());
  for (int e = 0; e < 6; ++e) {
    const double zd = z[size_t(e)], want = std::sqrt(std::log1p(std::exp(zd)));
    EXPECT_NEAR(s[size_t(e)], want, 1e-6 * (1 + want)) << e;
  }
  // ds/dz = sigmoid(z) / (2 s): against the formula, at every logit.
  std::vector<float> ds(6, 1.0f), dz(6, 0.0f);
  router_scores_backward(spec, s.data(), ds.data(), 1, dz.data());
  for (int e = 0; e < 6; ++e) {
    const double zd = z[size_t(e)], sd = std::sqrt(std::log1p(std::exp(zd)));
    EXPECT_NEAR(dz[size_t(e)], 1.0 / (1.0 + std::exp(-zd)) / (2 * sd), 1e-5) << e;
  }
}

TEST(MoEDispatch, TokenRoutingTakesTheTableRowAndTheScoresWeights) {
  // Hash-routed layers: the experts come from tid2eid whatever the scores;
  // the weights are those experts' scores, renormalised and scaled.
  RouterSpec spec = spec_of(4, 2, 1, 1, false, true, 1.5f);
  const std::vector<int32_t> table = {3, 0, 1, 2};  // token 0 -> {3, 0}, token 1 -> {1, 2}
  const std::vector<int64_t> ids = {1, 0, 1};
  const std::vector<float> s = {0.9f, 0.8f, 0.1f, 0.2f, 0.5f, 0.5f, 0.5f, 0.1f, 0.3f, 0.6f, 0.2f, 0.9f};
  std::vector<int32_t> idx(6);
  std::vector<float> w(6);
  route_by_token(spec, s.data(), table.data(), ids.data(), 3, idx.data(), w.data());
  EXPECT_EQ(idx, (std::vector<int32_t>{1, 2, 3, 0, 1, 2}));
  EXPECT_NEAR(w[0], 1.5 * 0.8 / 0.9, 1e-6);  // the top scores (0.9 at expert 0) do not matter
  EXPECT_NEAR(w[1], 1.5 * 0.1 / 0.9, 1e-6);
  EXPECT_NEAR(w[2], 1.5 * 0.1 / 0.6, 1e-6);
  EXPECT_NEAR(w[3], 1.5 * 0.5 / 0.6, 1e-6);
}

TEST(MoEDispatch, BalancedTokenRoutingUsesEveryExpertEquallyWithoutRepeats) {
  for (auto [vocab, k, E] : {std::tuple<int64_t, int, int>{1000, 6, 16}, {8192, 2, 16}, {97, 3, 5}}) {
    const std::vector<int32_t> table = balanced_token_routing(vocab, k, E, 3);
    check_token_routing(table.data(), vocab, k, E);  // in range, no row repeats an expert
    std::vector<int64_t> uses(size_t(E), 0);
    for (int32_t e : table) ++uses[size_t(e)];
    const auto [lo, hi] = std::minmax_element(uses.begin(), uses.end());
    EXPECT_LE(*hi - *lo, 1) << vocab << " " << k << " " << E;
    EXPECT_EQ(balanced_token_routing(vocab, k, E, 3), table);   // deterministic in the seed
    EXPECT_NE(balanced_token_routing(vocab, k, E, 4), table);   // and a function of it
  }
  const std::vector<int32_t> repeat = {0, 1, 2, 2}, outside = {0, 1, 2, 9};
  for (const auto& [table, what] : {std::pair{repeat, "lists expert 2 twice"}, {outside, "expert 9, outside 0..3"}}) {
    try {
      check_token_routing(table.data(), 2, 2, 4);
      ADD_FAILURE() << what;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  }
}

TEST(MoEDispatch, GroupByExpertIsAStableCountingSort) {
  const int E = 5, k = 2;
  std::vector<int32_t> idx = {3, 0, 0, 4, 3, 1, 4, 0};  // 4 tokens
  ExpertGroups g;
  group_by_expert(idx.data(), 4, k, E, g);
  EXPECT_EQ(g.offsets, (std::vector<int64_t>{0, 3, 4, 4, 6, 8}));
  EXPECT_EQ(g.pairs, (std::vector<int64_t>{1, 2, 7, 5, 0, 4, 3, 6}));
  EXPECT_EQ(g.count(2), 0);
  for (size_t p = 0; p < idx.size(); ++p) {
    EXPECT_EQ(g.pairs[size_t(g.position[p])], int64_t(p));
    EXPECT_GE(g.position[p], g.offsets[size_t(idx[p])]);
    EXPECT_LT(g.position[p], g.offsets[size_t(idx[p]) + 1]);
  }
}

TEST(MoEDispatch, GatherThenCombineRoundTrips) {
  const int64_t n = 4, d = 3;
  const int k = 2;
  std::vector<int32_t> idx = {1, 0, 2, 1, 0, 2, 1, 2};
  ExpertGroups g;
  group_by_expert(idx.data(), n, k, 3, g);
  std::vector<float> x = random_vector(n * d, 3);
  std::vector<float> xg(size_t(n * k * d));
  gather_rows(x.data(), d, g.pairs.data(), n * k, k, xg.data());
  for (int64_t r = 0; r < n * k; ++r)
    for (int64_t c = 0; c < d; ++c) EXPECT_EQ(xg[r * d + c], x[(g.pairs[r] / k) * d + c]);
  std::vector<float> w = {0.5f, 2.0f, 1.0f, -1.0f, 3.0f, 0.25f, 1.5f, 0.0f};
  std::vector<float> y(size_t(n * d), 1.0f);
  combine_rows(xg.data(), g.position.data(), w.data(), n, k, d, y.data());
  for (int64_t t = 0; t < n; ++t)
    for (int64_t c = 0; c < d; ++c)
      EXPECT_NEAR(y[t * d + c], 1.0f + (w[t * k] + w[t * k + 1]) * x[t * d + c], 1e-5);
}

TEST(MoEDispatch, RouterBackwardMatchesFiniteDifferences) {
  // Logits -> scores -> weights of a fixed choice; loss = sum dw * w.
  for (RouterScoring scoring : {RouterScoring::Sigmoid, RouterScoring::Softmax, RouterScoring::SqrtSoftplus}) {
    for (bool norm : {true, false}) {
      RouterSpec spec = spec_of(6, 3, 1, 1, false, norm, 1.7f);
      spec.scoring = scoring;
      const int64_t n = 4;
      std::vector<float> z = random_vector(n * 6, 11);
      std::vector<float> r = random_vector(n * 3, 12);
      std::vector<float> s(z.size());
      std::vector<int32_t> idx(size_t(n * 3));
      std::vector<float> w(idx.size());
      router_scores(spec, z.data(), n, s.data());
      route_top_k(spec, s.data(), nullptr, n, idx.data(), w.data());
      const std::vector<int32_t> chosen = idx;
      std::vector<float> ds(s.size(), 0.0f), dz(s.size(), 0.0f);
      route_weights_backward(spec, s.data(), idx.data(), r.data(), n, ds.data());
      router_scores_backward(spec, s.data(), ds.data(), n, dz.data());
      auto loss = [&]() {
        router_scores(spec, z.data(), n, s.data());
        route_top_k(spec, s.data(), nullptr, n, idx.data(), w.data());
        EXPECT_EQ(idx, chosen) << "perturbation flipped a routing decision";
        return weighted_sum(w.data(), r.data(), n * 3);
      };
      expect_gradient_matches("dlogits scoring " + std::to_string(int(scoring)) + " norm=" + (norm ? "1" : "0"),
                              z.data(), n * 6, dz.data(), loss, 24, 1e-3f);
    }
  }
}

TEST(MoEDispatch, BalanceLossValueAndGradient) {
  RouterSpec spec = spec_of(4, 2);
  const int64_t B = 2, L = 3, n = B * L;
  std::vector<float> s(size_t(n * 4));
  for (float& v : s) v = 0.25f;
  // Uniform scores: P_e = 1/4, and sum_e f_e = E/(kL) * kL = E, so the loss is alpha.
  std::vector<int32_t> idx = {0, 1, 0, 1, 0, 1, 2, 3, 0, 2, 1, 3};
  EXPECT_NEAR(seq_balance_loss(spec, s.data(), idx.data(), B, L, 0.3), 0.3, 1e-9);

  s = random_vector(n * 4, 5);
  for (float& v : s) v = 0.1f + std::fabs(v);
  std::vector<float> ds(s.size(), 0.0f);
  seq_balance_loss_backward(spec, s.data(), idx.data(), B, L, 0.7, ds.data());
  auto loss = [&]() { return seq_balance_loss(spec, s.data(), idx.data(), B, L, 0.7); };
  expect_gradient_matches("balance ds", s.data(), n * 4, ds.data(), loss, 24, 1e-3f);
}

TEST(MoEDispatch, BadInputIsAnError) {
  RouterSpec spec = spec_of(4, 2);
  std::vector<float> z = {0.0f, NAN, 1.0f, 2.0f}, s(4);
  EXPECT_THROW(router_scores(spec, z.data(), 1, s.data()), Error);
  std::vector<float> good = {0.1f, 0.2f, 0.3f, 0.4f};
  std::vector<float> bias = {0.0f, NAN, 0.0f, 0.0f};
  std::vector<int32_t> idx(2);
  std::vector<float> w(2);
  EXPECT_THROW(route_top_k(spec, good.data(), bias.data(), 1, idx.data(), w.data()), Error);
  std::vector<int32_t> bad_ids = {0, 7};
  ExpertGroups g;
  EXPECT_THROW(group_by_expert(bad_ids.data(), 1, 2, 4, g), Error);
  EXPECT_THROW(check_router_spec(spec_of(4, 5)), Error);
  EXPECT_THROW(check_router_spec(spec_of(6, 2, 4, 1)), Error);   // 4 does not divide 6
  EXPECT_THROW(check_router_spec(spec_of(8, 3, 4, 1)), Error);   // 3 > 1 kept group of 2
  EXPECT_THROW(check_router_spec(spec_of(4, 1, 4, 1)), Error);   // groups of 1
  EXPECT_NO_THROW(check_router_spec(spec_of(8, 4, 4, 2)));
}

}  // namespace
}  // namespace memoe
