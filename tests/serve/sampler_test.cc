#include "serve/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "core/error.h"
#include "core/rng.h"

namespace memoe {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

SamplingConfig make_config(float temperature, int top_k, float top_p, uint64_t seed) {
  SamplingConfig c;
  c.temperature = temperature;
  c.top_k = top_k;
  c.top_p = top_p;
  c.seed = seed;
  return c;
}

// Relative frequency of each id over `draws` samples.
std::vector<double> frequencies(Sampler& s, const std::vector<float>& logits, int draws) {
  std::vector<double> freq(logits.size(), 0.0);
  for (int i = 0; i < draws; ++i) freq[s.sample(logits.data(), int64_t(logits.size()))] += 1.0 / draws;
  return freq;
}

std::vector<double> softmax(const std::vector<float>& logits, double temperature) {
  double mx = -1e300, sum = 0.0;
  for (float v : logits) mx = std::max(mx, double(v));
  std::vector<double> p;
  for (float v : logits) p.push_back(std::exp((v - mx) / temperature)), sum += p.back();
  for (double& x : p) x /= sum;
  return p;
}

TEST(Sampler, GreedyPicksArgmaxAndLowestIdOnTies) {
  SamplingConfig c;
  c.greedy = true;
  c.temperature = 0.0f;  // ignored when greedy
  Sampler s(c);
  const std::vector<float> logits = {0.1f, 2.0f, -3.0f, 1.9f};
  EXPECT_EQ(s.sample(logits.data(), 4), 1);
  const std::vector<float> tied = {kNegInf, 5.0f, 1.0f, 5.0f};
  EXPECT_EQ(s.sample(tied.data(), 4), 1);
  const std::vector<float> negative = {-7.0f, -2.0f, -9.0f};
  EXPECT_EQ(s.sample(negative.data(), 3), 1);
}

TEST(Sampler, TopKOneEqualsGreedy) {
  Rng rng(7);
  SamplingConfig g;
  g.greedy = true;
  Sampler greedy(g);
  Sampler top1(make_config(1.5f, 1, 1.0f, 3));
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<float> logits(37);
    for (float& v : logits) v = float(rng.normal() * 3.0);
    if (trial % 5 == 0) logits[trial % 37] = logits[(trial + 1) % 37];  // some ties
    EXPECT_EQ(top1.sample(logits.data(), 37), greedy.sample(logits.data(), 37)) << "trial " << trial;
  }
}

TEST(Sampler, SameSeedSameDrawsDifferentSeedDifferentDraws) {
  const std::vector<float> logits = {0.0f, 0.3f, -0.2f, 0.1f, 0.0f, 0.25f, -0.1f, 0.05f};
  Sampler a(make_config(1.0f, 0, 1.0f, 42)), b(make_config(1.0f, 0, 1.0f, 42)), c(make_config(1.0f, 0, 1.0f, 43));
  std::vector<int32_t> da, db, dc;
  for (int i = 0; i < 200; ++i) {
    da.push_back(a.sample(logits.data(), 8));
    db.push_back(b.sample(logits.data(), 8));
    dc.push_back(c.sample(logits.data(), 8));
  }
  EXPECT_EQ(da, db);
  EXPECT_NE(da, dc);
}

TEST(Sampler, SmallTopPKeepsOnlyTheMostLikely) {
  const std::vector<float> logits = {1.0f, 1.2f, 0.9f, 1.1f};  // token 1 most likely, but not by much
  Sampler s(make_config(1.0f, 0, 0.05f, 5));
  for (int i = 0; i < 500; ++i) ASSERT_EQ(s.sample(logits.data(), 4), 1);
}

TEST(Sampler, FrequenciesMatchSoftmax) {
  const std::vector<float> logits = {0.0f, 1.0f, 2.0f, -1.0f, 0.5f};
  const int draws = 400000;  // standard error of each frequency < 0.0008
  Sampler t1(make_config(1.0f, 0, 1.0f, 11));
  const auto f1 = frequencies(t1, logits, draws), p1 = softmax(logits, 1.0);
  for (size_t i = 0; i < logits.size(); ++i) EXPECT_NEAR(f1[i], p1[i], 0.005) << "token " << i;
  Sampler t05(make_config(0.5f, 0, 1.0f, 12));
  const auto f05 = frequencies(t05, logits, draws), p05 = softmax(logits, 0.5);
  for (size_t i = 0; i < logits.size(); ++i) EXPECT_NEAR(f05[i], p05[i], 0.005) << "token " << i;
}

TEST(Sampler, TopKAndTopPRenormaliseTheKeptSet) {
  // p = 0.5, 0.3, 0.2: top_k = 2 keeps tokens 0 and 1 in ratio 5:3.
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  Sampler k2(make_config(1.0f, 2, 1.0f, 21));
  const auto fk = frequencies(k2, logits, 200000);
  EXPECT_NEAR(fk[0], 0.625, 0.006);
  EXPECT_NEAR(fk[1], 0.375, 0.006);
  EXPECT_EQ(fk[2], 0.0);
  // top_p = 0.7: 0.5 alone is not enough, 0.5 + 0.3 is; same kept set.
  Sampler p07(make_config(1.0f, 0, 0.7f, 22));
  const auto fp = frequencies(p07, logits, 200000);
  EXPECT_NEAR(fp[0], 0.625, 0.006);
  EXPECT_EQ(fp[2], 0.0);
  // top_k = 2 first, then top_p = 0.6 of the renormalised pair (0.625, 0.375): token 0 alone.
  Sampler both(make_config(1.0f, 2, 0.6f, 23));
  for (int i = 0; i < 300; ++i) ASSERT_EQ(both.sample(logits.data(), 3), 0);
}

TEST(Sampler, NeverDrawsMinusInfinity) {
  const std::vector<float> logits = {kNegInf, 0.0f, kNegInf, 0.0f, kNegInf};
  Sampler s(make_config(2.0f, 0, 1.0f, 9));
  const auto f = frequencies(s, logits, 20000);
  EXPECT_EQ(f[0] + f[2] + f[4], 0.0);
  EXPECT_NEAR(f[1], 0.5, 0.02);
}

TEST(Sampler, BadConfigsThrow) {
  EXPECT_THROW(Sampler(make_config(0.0f, 0, 1.0f, 0)), Error);
  EXPECT_THROW(Sampler(make_config(-1.0f, 0, 1.0f, 0)), Error);
  EXPECT_THROW(Sampler(make_config(std::nanf(""), 0, 1.0f, 0)), Error);
  EXPECT_THROW(Sampler(make_config(1.0f, -1, 1.0f, 0)), Error);
  EXPECT_THROW(Sampler(make_config(1.0f, 0, 0.0f, 0)), Error);
  EXPECT_THROW(Sampler(make_config(1.0f, 0, 1.5f, 0)), Error);
  EXPECT_THROW(Sampler(make_config(1.0f, 0, std::nanf(""), 0)), Error);
  EXPECT_NO_THROW(Sampler(make_config(1.0f, 5, 1.0f, 0)));
}

TEST(Sampler, BadLogitsThrow) {
  Sampler s(make_config(1.0f, 0, 1.0f, 0));
  const std::vector<float> with_nan = {0.0f, std::nanf(""), 1.0f};
  EXPECT_THROW(s.sample(with_nan.data(), 3), Error);
  const std::vector<float> with_inf = {0.0f, std::numeric_limits<float>::infinity()};
  EXPECT_THROW(s.sample(with_inf.data(), 2), Error);
  const std::vector<float> all_neg_inf = {kNegInf, kNegInf};
  EXPECT_THROW(s.sample(all_neg_inf.data(), 2), Error);
  EXPECT_THROW(s.sample(with_nan.data(), 0), Error);
  EXPECT_THROW(s.sample(nullptr, 3), Error);
}

}  // namespace
}  // namespace memoe
