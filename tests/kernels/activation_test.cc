#include "kernels/activation.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "grad_check.h"

namespace memoe {
namespace {

using memoe::testing::expect_gradient_matches;
using memoe::testing::random_vector;
using memoe::testing::weighted_sum;

double plain_silu(double a) { return a / (1.0 + std::exp(-a)); }

TEST(SwiGluKernel, ForwardMatchesFormula) {
  const int64_t n = 40;
  std::vector<float> a = random_vector(n, 1, 2.0f), b = random_vector(n, 2);
  a[0] = 0.0f;
  std::vector<float> h(size_t(n), -5.0f), y(size_t(n), -5.0f);
  swiglu_forward(a.data(), b.data(), n, h.data());
  silu_forward(a.data(), n, y.data());
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_NEAR(h[i], plain_silu(a[i]) * b[i], 1e-5 * (1.0 + std::fabs(h[i])));
    EXPECT_NEAR(y[i], plain_silu(a[i]), 1e-5 * (1.0 + std::fabs(y[i])));
  }
}

TEST(SwiGluKernel, ExtremeInputsStayFinite) {
  std::vector<float> a{-200.0f, -90.0f, 90.0f, 200.0f}, b(4, 1.0f), h(4), da(4, 0.0f), db(4, 0.0f), dh(4, 1.0f);
  swiglu_forward(a.data(), b.data(), 4, h.data());
  swiglu_backward(dh.data(), a.data(), b.data(), 4, da.data(), db.data());
  for (int i = 0; i < 4; ++i) {
    EXPECT_TRUE(std::isfinite(h[i]) && std::isfinite(da[i]) && std::isfinite(db[i])) << "a = " << a[i];
  }
  EXPECT_NEAR(h[0], 0.0f, 1e-6f);
  EXPECT_FLOAT_EQ(h[3], 200.0f);
  EXPECT_NEAR(da[0], 0.0f, 1e-6f);   // silu' -> 0 at -inf
  EXPECT_FLOAT_EQ(da[3], 1.0f);      // silu' -> 1 at +inf
}

TEST(SwiGluKernel, SwigluBackwardMatchesFiniteDifferences) {
  const int64_t n = 30;
  std::vector<float> a = random_vector(n, 3, 1.5f), b = random_vector(n, 4), r = random_vector(n, 5);
  std::vector<float> h(static_cast<size_t>(n));
  auto loss = [&] {
    swiglu_forward(a.data(), b.data(), n, h.data());
    return weighted_sum(h.data(), r.data(), n);
  };
  std::vector<float> da(size_t(n), 0.0f), db(size_t(n), 0.0f);
  swiglu_backward(r.data(), a.data(), b.data(), n, da.data(), db.data());
  expect_gradient_matches("da", a.data(), n, da.data(), loss, 30);
  expect_gradient_matches("db", b.data(), n, db.data(), loss, 30);
}

TEST(SwiGluKernel, ClampedFollowsDeepSeeksExpert) {
  // V4: h = silu(min(a, L)) * clamp(b, -L, L), L = swiglu_limit.
  const float L = 2.0f;
  const std::vector<float> a = {-3.0f, 1.0f, 2.5f, 7.0f, 0.5f}, b = {1.0f, -4.0f, 3.0f, 0.5f, 1.5f};
  std::vector<float> h(5), hb(5);
  swiglu_forward(a.data(), b.data(), 5, h.data(), L);
  for (int i = 0; i < 5; ++i) {
    const double g = std::min(double(a[size_t(i)]), 2.0), u = std::clamp(double(b[size_t(i)]), -2.0, 2.0);
    EXPECT_NEAR(h[size_t(i)], plain_silu(g) * u, 1e-5) << i;
  }
  // The gate is clamped from above only: a large negative gate is kept.
  EXPECT_NEAR(h[0], plain_silu(-3.0) * 1.0, 1e-6);
  swiglu_forward(a.data(), b.data(), 5, hb.data());  // no limit: as before
  EXPECT_NEAR(hb[3], plain_silu(7.0) * 0.5, 1e-5);
}

TEST(SwiGluKernel, ClampedBackwardMatchesFiniteDifferences) {
  // Values on both sides of the limits (none within h of them), so the
  // clamped ones must get exactly zero gradient.
  const int64_t n = 40;
  const float L = 1.0f;
  std::vector<float> a = random_vector(n, 13, 1.5f), b = random_vector(n, 14, 1.5f), r = random_vector(n, 15);
  for (float* v : {a.data(), b.data()})
    for (int64_t i = 0; i < n; ++i)
      if (std::fabs(std::fabs(v[i]) - L) < 0.05f) v[i] += 0.1f;
  std::vector<float> h(static_cast<size_t>(n));
  auto loss = [&] {
    swiglu_forward(a.data(), b.data(), n, h.data(), L);
    return weighted_sum(h.data(), r.data(), n);
  };
  std::vector<float> da(size_t(n), 0.0f), db(size_t(n), 0.0f);
  swiglu_backward(r.data(), a.data(), b.data(), n, da.data(), db.data(), L);
  int clamped = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (a[size_t(i)] > L) {
      EXPECT_EQ(da[size_t(i)], 0.0f);
      ++clamped;
    }
    if (std::fabs(b[size_t(i)]) > L) {
      EXPECT_EQ(db[size_t(i)], 0.0f);
      ++clamped;
    }
  }
  EXPECT_GT(clamped, 5);
  expect_gradient_matches("da (clamped)", a.data(), n, da.data(), loss, 40, 1e-2f);
  expect_gradient_matches("db (clamped)", b.data(), n, db.data(), loss, 40, 1e-2f);
}

TEST(SwiGluKernel, SiluBackwardMatchesFiniteDifferences) {
  const int64_t n = 30;
  std::vector<float> a = random_vector(n, 6, 2.0f), r = random_vector(n, 7);
  std::vector<float> y(static_cast<size_t>(n));
  auto loss = [&] {
    silu_forward(a.data(), n, y.data());
    return weighted_sum(y.data(), r.data(), n);
  };
  std::vector<float> da(size_t(n), 0.0f);
  silu_backward(r.data(), a.data(), n, da.data());
  expect_gradient_matches("da", a.data(), n, da.data(), loss, 30);
}

TEST(SwiGluKernel, BackwardAddsIntoGradients) {
  const int64_t n = 8;
  std::vector<float> a = random_vector(n, 8), b = random_vector(n, 9), dh = random_vector(n, 10);
  std::vector<float> da1(size_t(n), 0.0f), db1(size_t(n), 0.0f), da2(size_t(n), 2.0f), db2(size_t(n), 2.0f);
  swiglu_backward(dh.data(), a.data(), b.data(), n, da1.data(), db1.data());
  swiglu_backward(dh.data(), a.data(), b.data(), n, da2.data(), db2.data());
  std::vector<float> ds1(size_t(n), 0.0f), ds2(size_t(n), 2.0f);
  silu_backward(dh.data(), a.data(), n, ds1.data());
  silu_backward(dh.data(), a.data(), n, ds2.data());
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_FLOAT_EQ(da2[i], 2.0f + da1[i]);
    EXPECT_FLOAT_EQ(db2[i], 2.0f + db1[i]);
    EXPECT_FLOAT_EQ(ds2[i], 2.0f + ds1[i]);
  }
}

}  // namespace
}  // namespace memoe
