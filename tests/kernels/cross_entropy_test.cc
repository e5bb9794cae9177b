#include "kernels/cross_entropy.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/bf16.h"
#include "grad_check.h"

namespace memoe {
namespace {

using memoe::testing::expect_gradient_matches;
using memoe::testing::random_vector;

// -log softmax(row)[target] in double, straight from the definition.
double plain_nll(const float* row, int64_t vocab, int64_t target) {
  double sum = 0.0;
  for (int64_t v = 0; v < vocab; ++v) sum += std::exp(double(row[v]));
  return std::log(sum) - double(row[target]);
}

TEST(CrossEntropy, LossIsMeanOverRowsWithTargets) {
  const int64_t n = 6, vocab = 11;
  const std::vector<float> logits = random_vector(n * vocab, 1, 2.0f);
  const std::vector<int64_t> targets{3, -1, 0, 10, -1, 7};
  double want = 0.0;
  for (int64_t i = 0; i < n; ++i)
    if (targets[i] >= 0) want += plain_nll(logits.data() + i * vocab, vocab, targets[i]);
  want /= 4.0;  // four rows have targets; ignored rows do not count
  EXPECT_NEAR(cross_entropy(logits.data(), targets.data(), n, vocab, nullptr), want, 1e-6 * want);
  std::vector<float> dlogits(size_t(n * vocab));
  EXPECT_NEAR(cross_entropy(logits.data(), targets.data(), n, vocab, dlogits.data()), want, 1e-6 * want);
}

TEST(CrossEntropy, GradientMatchesFiniteDifferences) {
  const int64_t n = 5, vocab = 9;
  std::vector<float> logits = random_vector(n * vocab, 2, 1.5f);
  const std::vector<int64_t> targets{2, 8, -1, 0, 4};
  std::vector<float> dlogits(size_t(n * vocab), 123.0f);  // overwritten, not added to
  cross_entropy(logits.data(), targets.data(), n, vocab, dlogits.data());
  auto loss = [&] { return cross_entropy(logits.data(), targets.data(), n, vocab, nullptr); };
  expect_gradient_matches("dlogits", logits.data(), n * vocab, dlogits.data(), loss, 45);
  // Each row with a target sums to zero (softmax minus one-hot, over the count);
  // the ignored row gets exact zeros.
  for (int64_t i = 0; i < n; ++i) {
    double sum = 0.0;
    for (int64_t v = 0; v < vocab; ++v) sum += dlogits[size_t(i * vocab + v)];
    EXPECT_NEAR(sum, 0.0, 1e-6) << "row " << i;
    if (targets[i] < 0) {
      for (int64_t v = 0; v < vocab; ++v) EXPECT_EQ(dlogits[size_t(i * vocab + v)], 0.0f);
    }
  }
  EXPECT_NEAR(dlogits[0 * vocab + 2], (std::exp(-plain_nll(logits.data(), vocab, 2)) - 1.0) / 4.0, 1e-6);
}

// The bf16 gradient is the fp32 one rounded once, element for element
// (including ignored rows' zeros), with the same loss.
TEST(CrossEntropy, Bf16GradientIsTheFp32OneRounded) {
  const int64_t n = 40, vocab = 300;
  const std::vector<float> logits = memoe::testing::random_vector(n * vocab, 9);
  std::vector<int64_t> targets(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) targets[size_t(i)] = i % 7 == 3 ? -1 : (i * 37) % vocab;
  std::vector<float> d32(static_cast<size_t>(n * vocab));
  std::vector<uint16_t> d16(size_t(n * vocab), 0xffff);
  const double a = cross_entropy(logits.data(), targets.data(), n, vocab, d32.data());
  const double b = cross_entropy(logits.data(), targets.data(), n, vocab, nullptr, d16.data());
  EXPECT_EQ(a, b);
  for (int64_t i = 0; i < n * vocab; ++i) ASSERT_EQ(d16[size_t(i)], float_to_bf16(d32[size_t(i)])) << i;
}

TEST(CrossEntropy, LargeLogitsStayFinite) {
  const int64_t vocab = 4;
  const std::vector<float> logits{1000.0f, 999.0f, -1000.0f, 0.0f};
  const std::vector<int64_t> target{1};
  std::vector<float> d(vocab);
  const double loss = cross_entropy(logits.data(), target.data(), 1, vocab, d.data());
  EXPECT_NEAR(loss, 1.0 + std::log1p(std::exp(-1.0)), 1e-5);
  for (float v : d) EXPECT_TRUE(std::isfinite(v));
  EXPECT_NEAR(d[1], 1.0 / (1.0 + std::exp(1.0)) - 1.0, 1e-6);
}

TEST(CrossEntropy, AllRowsIgnoredGivesZero) {
  const int64_t n = 2, vocab = 3;
  const std::vector<float> logits = random_vector(n * vocab, 3);
  const std::vector<int64_t> targets{-1, -1};
  std::vector<float> d(size_t(n * vocab), 5.0f);
  EXPECT_EQ(cross_entropy(logits.data(), targets.data(), n, vocab, d.data()), 0.0);
  for (float v : d) EXPECT_EQ(v, 0.0f);
}

}  // namespace
}  // namespace memoe
