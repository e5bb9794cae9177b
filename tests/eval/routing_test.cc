// Routing analysis on constructed counts whose summaries are known, and on
// the tiny model with one expert's correction bias forced, whose choices are.
#include "eval/routing.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "core/error.h"
#include "core/rng.h"
#include "io/config.h"
#include "model/init.h"

namespace memoe {
namespace {

// One layer's counts: slots[domain][expert].
RoutingCounts one_layer(const std::vector<std::vector<double>>& slots) {
  RoutingCounts c;
  for (size_t d = 0; d < slots.size(); ++d) c.domains.push_back("d" + std::to_string(d));
  c.layers = {1};
  c.experts = int64_t(slots[0].size());
  c.tokens.assign(slots.size(), 100);
  c.slots = {slots};
  return c;
}

TEST(Routing, BalancedRoutingHasNoSpreadAndNoSpecialisation) {
  const auto r = summarise_routing(one_layer({{5, 5, 5, 5}, {20, 20, 20, 20}, {1, 1, 1, 1}}));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].layer, 1);
  EXPECT_DOUBLE_EQ(r[0].load_max_over_mean, 1.0);
  EXPECT_NEAR(r[0].load_cv, 0.0, 1e-12);
  EXPECT_NEAR(r[0].load_entropy, 1.0, 1e-12);
  for (double s : r[0].specialisation) EXPECT_NEAR(s, 0.0, 1e-12);
  for (const auto& row : r[0].usage)
    for (double f : row) EXPECT_DOUBLE_EQ(f, 0.25);
}

TEST(Routing, AnExpertOnlyOneDomainUsesIsFullySpecialisedWhateverTheDomainSizes) {
  // Expert 0 serves only domain 1; experts 1..3 take equal shares of every
  // domain's remaining slots, however many slots the domain has.
  const auto r = summarise_routing(one_layer({{0, 10, 10, 10}, {90, 30, 30, 30}, {0, 1, 1, 1}}));
  EXPECT_NEAR(r[0].specialisation[0], 1.0, 1e-12);
  // Experts 1..3: shares 1/3, 1/6, 1/3 of domains 0, 1, 2: p = (0.4, 0.2, 0.4).
  const double h = -(0.4 * std::log(0.4) * 2 + 0.2 * std::log(0.2)) / std::log(3.0);
  for (int e = 1; e < 4; ++e) EXPECT_NEAR(r[0].specialisation[size_t(e)], 1.0 - h, 1e-12) << e;
  EXPECT_NEAR(r[0].mean_specialisation, (1.0 + 3 * (1.0 - h)) / 4, 1e-12);
  // Loads 90, 41, 41, 41: max over mean 90 / 53.25.
  EXPECT_NEAR(r[0].load_max_over_mean, 90.0 / 53.25, 1e-12);
  EXPECT_GT(r[0].load_cv, 0.3);
  EXPECT_LT(r[0].load_entropy, 1.0);
}

TEST(Routing, BestAssignmentFindsTheMaximumAndRecoversAPermutation) {
  // A greedy row-by-row choice takes (0,0) = 10 and is left with 1 + 1;
  // the best is 9 + 9 + 1, and every other assignment sums less.
  const std::vector<std::vector<double>> s = {{10, 9, 0}, {9, 1, 0}, {0, 8, 1}};
  EXPECT_EQ(best_assignment(s), (std::vector<int>{1, 0, 2}));
  // A random 12 x 12 score with one permutation planted well above the rest.
  Rng rng(5);
  std::vector<int> planted(12);
  for (int i = 0; i < 12; ++i) planted[size_t(i)] = i;
  for (size_t i = 12; i > 1; --i) std::swap(planted[i - 1], planted[rng.below(i)]);
  std::vector<std::vector<double>> score(12, std::vector<double>(12));
  for (size_t i = 0; i < 12; ++i)
    for (size_t j = 0; j < 12; ++j) score[i][j] = rng.uniform() + (int(j) == planted[i] ? 2.0 : 0.0);
  EXPECT_EQ(best_assignment(score), planted);
  EXPECT_THROW(best_assignment({{1, 2}, {3}}), Error);
}

TEST(Routing, APermutedCopyIsMatchedExactlyAndShuffledDomainsAreNot) {
  // 6 domains x 8 experts with distinct profiles; b is a with its experts
  // relabelled.
  Rng rng(9);
  std::vector<std::vector<double>> a(6, std::vector<double>(8));
  for (auto& row : a)
    for (double& v : row) v = 1 + 20 * rng.uniform();
  const std::vector<int> relabel = {3, 0, 7, 1, 6, 2, 5, 4};  // a's expert e is b's relabel[e]
  std::vector<std::vector<double>> b(6, std::vector<double>(8));
  for (size_t d = 0; d < 6; ++d)
    for (size_t e = 0; e < 8; ++e) b[d][size_t(relabel[e])] = a[d][e];
  const auto ra = summarise_routing(one_layer(a)), rb = summarise_routing(one_layer(b));
  const auto self = routing_consistency(ra, ra);
  EXPECT_NEAR(self[0].matched_correlation, 1.0, 1e-12);
  EXPECT_NEAR(self[0].identity_correlation, 1.0, 1e-12);
  const auto c = routing_consistency(ra, rb);
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].match, relabel);
  EXPECT_NEAR(c[0].matched_correlation, 1.0, 1e-12);
  EXPECT_LT(c[0].identity_correlation, 0.5);
  // Shuffling the domains destroys the shared structure the match found.
  EXPECT_LT(c[0].null_correlation, 0.9);
  EXPECT_GT(c[0].null_correlation, c[0].identity_correlation);  // matching alone finds some
  // Different shapes: one line.
  EXPECT_THROW(routing_consistency(ra, summarise_routing(one_layer({{1, 2}, {3, 4}}))), Error);
  std::vector<LayerRouting> two = ra;
  two.push_back(ra[0]);
  EXPECT_THROW(routing_consistency(ra, two), Error);
}

TEST(Routing, CountsEveryTokensChoicesAtEachMoELayer) {
  // The tiny preset (MoE layers 1 and 2, 8 experts, top 2) with expert 3
  // of layer 2 given a correction bias no score can beat: it takes one of
  // every token's two slots there.
  ModelConfig cfg = load_config(std::string(MEMOE_SOURCE_DIR) + "/configs/tiny.json");
  Model m = init_model(cfg, 3);
  m.params.visit([&](const std::string& name, Tensor& t) {
    if (name == "model.layers.2.mlp.gate.e_score_correction_bias") t[3] = 100.0f;
  });
  std::vector<std::vector<int64_t>> ids(2);
  Rng rng(4);
  for (int i = 0; i < 70; ++i) ids[0].push_back(int64_t(rng.below(uint64_t(cfg.vocab_size))));
  for (int i = 0; i < 40; ++i) ids[1].push_back(int64_t(rng.below(uint64_t(cfg.vocab_size))));
  const RoutingCounts c = count_routing(m, {"a", "b"}, ids, 32);  // windows of 32, 32, 6 and 32, 8
  EXPECT_EQ(c.layers, (std::vector<int>{1, 2}));
  EXPECT_EQ(c.tokens, (std::vector<int64_t>{70, 40}));
  for (size_t li = 0; li < 2; ++li)
    for (size_t d = 0; d < 2; ++d) {
      double slots = 0;
      for (double v : c.slots[li][d]) slots += v;
      EXPECT_EQ(slots, 2.0 * double(c.tokens[d])) << "layer " << c.layers[li] << " domain " << d;
    }
  EXPECT_EQ(c.slots[1][0][3], 70.0);
  EXPECT_EQ(c.slots[1][1][3], 40.0);
  EXPECT_LT(c.slots[0][0][3], 70.0);  // layer 1 is left alone
  const auto r = summarise_routing(c);
  EXPECT_DOUBLE_EQ(r[1].usage[0][3], 0.5);
  // Bad input: one line each.
  EXPECT_THROW(count_routing(m, {"a"}, ids, 32), Error);
  EXPECT_THROW(count_routing(m, {"a", "b"}, ids, cfg.max_position_embeddings + 1), Error);
  EXPECT_THROW(count_routing(m, {"a", "b"}, {ids[0], {}}, 32), Error);
  EXPECT_THROW(count_routing(m, {"a", "b"}, {ids[0], {int64_t(cfg.vocab_size)}}, 32), Error);
}

}  // namespace
}  // namespace memoe
