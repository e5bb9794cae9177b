#include "kernels/norm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "grad_check.h"

namespace memoe {
namespace {

using memoe::testing::expect_gradient_matches;
using memoe::testing::random_vector;
using memoe::testing::weighted_sum;

// Gains around 1 but not all 1, so that a backward that forgets g fails.
std::vector<float> random_gain(int64_t d, uint32_t seed) {
  std::vector<float> g = random_vector(d, seed, 0.3f);
  for (float& v : g) v += 1.0f;
  return g;
}

TEST(RmsNorm, ForwardMatchesPlainFormula) {
  const int64_t n = 5, d = 7;
  const float eps = 1e-5f;
  std::vector<float> x = random_vector(n * d, 1), g = random_gain(d, 2);
  x[3] = 0.0f;  // the formula has no special case for zeros
  std::vector<float> y(size_t(n * d), -7.0f), rstd(size_t(n), -7.0f);  // overwritten, not added to
  rmsnorm_forward(x.data(), g.data(), eps, n, d, y.data(), rstd.data());
  for (int64_t i = 0; i < n; ++i) {
    double ms = 0.0;
    for (int64_t j = 0; j < d; ++j) ms += double(x[i * d + j]) * x[i * d + j];
    const double r = 1.0 / std::sqrt(ms / double(d) + eps);
    EXPECT_NEAR(rstd[i], r, 1e-6 * r);
    for (int64_t j = 0; j < d; ++j) EXPECT_NEAR(y[i * d + j], x[i * d + j] * r * g[j], 1e-5);
  }
}

TEST(RmsNorm, EpsilonKeepsZeroRowFinite) {
  const int64_t d = 4;
  std::vector<float> x(d, 0.0f), g(d, 1.0f), y(d, 1.0f), rstd(1);
  rmsnorm_forward(x.data(), g.data(), 1e-6f, 1, d, y.data(), rstd.data());
  EXPECT_NEAR(rstd[0], 1000.0f, 1e-2f);
  for (float v : y) EXPECT_EQ(v, 0.0f);
  // rstd may be null when nothing needs it.
  std::vector<float> y2(d, 1.0f);
  rmsnorm_forward(x.data(), g.data(), 1e-6f, 1, d, y2.data(), nullptr);
  EXPECT_EQ(y2, y);
}

TEST(RmsNorm, BackwardMatchesFiniteDifferences) {
  const int64_t n = 4, d = 9;
  const float eps = 1e-6f;
  std::vector<float> x = random_vector(n * d, 3), g = random_gain(d, 4), r = random_vector(n * d, 5);
  std::vector<float> y(size_t(n * d)), rstd(static_cast<size_t>(n));
  auto loss = [&] {
    rmsnorm_forward(x.data(), g.data(), eps, n, d, y.data(), rstd.data());
    return weighted_sum(y.data(), r.data(), n * d);
  };
  loss();
  std::vector<float> dx(size_t(n * d), 0.0f), dg(size_t(d), 0.0f);
  rmsnorm_backward(r.data(), x.data(), g.data(), rstd.data(), n, d, dx.data(), dg.data());
  expect_gradient_matches("dx", x.data(), n * d, dx.data(), loss, 36);
  expect_gradient_matches("dg", g.data(), d, dg.data(), loss);
}

// The large-size path reduces dg over per-thread partial sums.
TEST(RmsNorm, BackwardOfLargeInputMatchesPlainLoops) {
  const int64_t n = 300, d = 64;  // n*d above the kernel's parallel threshold
  std::vector<float> x = random_vector(n * d, 6), g = random_gain(d, 7), dy = random_vector(n * d, 8);
  std::vector<float> y(size_t(n * d)), rstd(static_cast<size_t>(n));
  rmsnorm_forward(x.data(), g.data(), 1e-6f, n, d, y.data(), rstd.data());
  std::vector<float> dx(size_t(n * d), 0.0f), dg(size_t(d), 0.0f);
  rmsnorm_backward(dy.data(), x.data(), g.data(), rstd.data(), n, d, dx.data(), dg.data());
  std::vector<double> dg_ref(size_t(d), 0.0);
  for (int64_t i = 0; i < n; ++i) {
    const double rs = rstd[i];
    double dot = 0.0;
    for (int64_t j = 0; j < d; ++j) dot += double(dy[i * d + j]) * g[j] * x[i * d + j];
    for (int64_t j = 0; j < d; ++j) {
      const double ref = dy[i * d + j] * g[j] * rs - x[i * d + j] * dot / double(d) * rs * rs * rs;
      ASSERT_NEAR(dx[i * d + j], ref, 1e-4 + 1e-4 * std::fabs(ref));
      dg_ref[j] += double(dy[i * d + j]) * x[i * d + j] * rs;
    }
  }
  for (int64_t j = 0; j < d; ++j) EXPECT_NEAR(dg[j], dg_ref[j], 1e-3 + 1e-4 * std::fabs(dg_ref[j]));
}

TEST(RmsNorm, BackwardAddsIntoGradients) {
  const int64_t n = 3, d = 5;
  std::vector<float> x = random_vector(n * d, 9), g = random_gain(d, 10), dy = random_vector(n * d, 11);
  std::vector<float> y(size_t(n * d)), rstd(static_cast<size_t>(n));
  rmsnorm_forward(x.data(), g.data(), 1e-6f, n, d, y.data(), rstd.data());
  std::vector<float> dx1(size_t(n * d), 0.0f), dg1(size_t(d), 0.0f);
  rmsnorm_backward(dy.data(), x.data(), g.data(), rstd.data(), n, d, dx1.data(), dg1.data());
  std::vector<float> dx2(size_t(n * d), 1.0f), dg2(size_t(d), 1.0f);
  rmsnorm_backward(dy.data(), x.data(), g.data(), rstd.data(), n, d, dx2.data(), dg2.data());
  for (int64_t i = 0; i < n * d; ++i) EXPECT_FLOAT_EQ(dx2[i], 1.0f + dx1[i]);
  for (int64_t j = 0; j < d; ++j) EXPECT_FLOAT_EQ(dg2[j], 1.0f + dg1[j]);
  // dg may be null (frozen gain).
  std::vector<float> dx3(size_t(n * d), 0.0f);
  rmsnorm_backward(dy.data(), x.data(), g.data(), rstd.data(), n, d, dx3.data(), nullptr);
  EXPECT_EQ(dx3, dx1);
}

}  // namespace
}  // namespace memoe
