// mHC kernels: Sinkhorn in DeepSeek's order against a plain double-precision
// transcription, the write-back's index order, finite-difference checks of
// every backward (through all Sinkhorn rounds), and bits that do not depend
// on the thread count.
#include "kernels/mhc.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "grad_check.h"
#include "thread_counts.h"

namespace memoe {
namespace {

using memoe::testing::expect_gradient_matches;
using memoe::testing::random_vector;
using memoe::testing::weighted_sum;

MhcDims dims(int64_t tokens, int n, int64_t d, int iters = 20) {
  MhcDims m;
  m.tokens = tokens;
  m.n = n;
  m.d = d;
  m.sinkhorn_iters = iters;
  m.hc_eps = 1e-6f;
  m.norm_eps = 1e-6f;
  return m;
}

// DeepSeek's hc_split_sinkhorn for one token, in double: softmax over each
// row then + eps, a column division, then iters - 1 rounds of (row, column),
// each dividing by (sum + eps).
std::vector<double> plain_sinkhorn(const std::vector<double>& c, int n, int iters, double eps) {
  std::vector<double> m(c.size());
  for (int j = 0; j < n; ++j) {
    double mx = -1e300, s = 0;
    for (int k = 0; k < n; ++k) mx = std::max(mx, c[size_t(j * n + k)]);
    for (int k = 0; k < n; ++k) s += std::exp(c[size_t(j * n + k)] - mx);
    for (int k = 0; k < n; ++k) m[size_t(j * n + k)] = std::exp(c[size_t(j * n + k)] - mx) / s + eps;
  }
  auto divide = [&](bool column) {
    for (int a = 0; a < n; ++a) {
      double s = 0;
      for (int b = 0; b < n; ++b) s += column ? m[size_t(b * n + a)] : m[size_t(a * n + b)];
      for (int b = 0; b < n; ++b) (column ? m[size_t(b * n + a)] : m[size_t(a * n + b)]) /= s + eps;
    }
  };
  divide(true);
  for (int i = 1; i < iters; ++i) divide(false), divide(true);
  return m;
}

struct Params {
  std::vector<float> x, fn, scale, base;
};

Params random_params(const MhcDims& m, uint32_t seed) {
  Params p;
  p.x = random_vector(m.tokens * m.width(), seed);
  p.fn = random_vector(int64_t(m.mixes()) * m.width(), seed + 1, 0.05f);
  p.scale = {0.7f, 1.3f, 2.1f};
  p.base = random_vector(m.mixes(), seed + 2, 0.5f);
  return p;
}

TEST(Mhc, CoefficientsFollowDeepSeeksFormulas) {
  const MhcDims m = dims(3, 4, 8);
  Params p = random_params(m, 1);
  const int n = m.n, M = m.mixes();
  std::vector<float> mixes(size_t(m.tokens * M)), rstd(size_t(m.tokens)), pre(size_t(m.tokens * n)),
      post(size_t(m.tokens * n)), comb(size_t(m.tokens * n * n)), u(size_t(m.tokens * m.d));
  mhc_pre_forward(m, p.x.data(), p.fn.data(), p.scale.data(), p.base.data(), mixes.data(), rstd.data(), pre.data(),
                  post.data(), comb.data(), u.data());
  for (int64_t t = 0; t < m.tokens; ++t) {
    const float* v = p.x.data() + t * m.width();
    double ss = 0;
    for (int64_t i = 0; i < m.width(); ++i) ss += double(v[i]) * v[i];
    const double r = 1.0 / std::sqrt(ss / double(m.width()) + 1e-6);
    std::vector<double> z(static_cast<size_t>(M));
    for (int j = 0; j < M; ++j) {
      double g = 0;
      for (int64_t i = 0; i < m.width(); ++i) g += double(p.fn[size_t(j * m.width() + i)]) * v[i];
      z[size_t(j)] = g * r;
      EXPECT_NEAR(mixes[size_t(t * M + j)], z[size_t(j)], 1e-5);
    }
    auto sig = [](double a) { return 1 / (1 + std::exp(-a)); };
    std::vector<double> logits(size_t(n * n));
    for (int j = 0; j < n; ++j) {
      EXPECT_NEAR(pre[size_t(t * n + j)], sig(0.7 * z[size_t(j)] + p.base[size_t(j)]) + 1e-6, 1e-6);
      EXPECT_NEAR(post[size_t(t * n + j)], 2 * sig(1.3 * z[size_t(n + j)] + p.base[size_t(n + j)]), 1e-6);
    }
    for (int i = 0; i < n * n; ++i) logits[size_t(i)] = 2.1 * z[size_t(2 * n + i)] + p.base[size_t(2 * n + i)];
    const std::vector<double> want = plain_sinkhorn(logits, n, 20, 1e-6);
    for (int i = 0; i < n * n; ++i) EXPECT_NEAR(comb[size_t(t * n * n + i)], want[size_t(i)], 2e-6) << i;
    // Doubly stochastic: the last division is by columns, so columns sum to 1
    // but for eps; rows nearly so after 20 rounds.
    for (int a = 0; a < n; ++a) {
      double col = 0, row = 0;
      for (int b = 0; b < n; ++b) col += comb[size_t(t * n * n + b * n + a)], row += comb[size_t(t * n * n + a * n + b)];
      EXPECT_NEAR(col, 1.0, 1e-5);
      EXPECT_NEAR(row, 1.0, 1e-3);
    }
    for (int64_t c = 0; c < m.d; ++c) {
      double want_u = 0;
      for (int j = 0; j < n; ++j) want_u += double(pre[size_t(t * n + j)]) * v[j * m.d + c];
      EXPECT_NEAR(u[size_t(t * m.d + c)], want_u, 1e-5);
    }
  }
}

TEST(Mhc, WriteBackTakesColumnKOfTheCombination) {
  // y_k = post_k f + sum_j comb_jk x_j: stream k reads column k.
  const MhcDims m = dims(1, 2, 1);
  const std::vector<float> x = {10.0f, 100.0f}, f = {1.0f}, post = {0.5f, 2.0f};
  const std::vector<float> comb = {0.25f, 0.75f, 0.5f, 0.5f};  // row 0: from stream 0
  std::vector<float> y(2);
  mhc_post_forward(m, x.data(), f.data(), post.data(), comb.data(), y.data());
  EXPECT_FLOAT_EQ(y[0], 0.5f + 0.25f * 10 + 0.5f * 100);
  EXPECT_FLOAT_EQ(y[1], 2.0f + 0.75f * 10 + 0.5f * 100);
}

// A sublayer between the mixes: f = u ⊙ u ⊙ s, so that its gradient depends
// on u and a wrong du shows.
struct Block {
  MhcDims m;
  Params p;
  std::vector<float> s, r;  // the toy sublayer's gains; the loss weights on y

  double loss() {
    const int n = m.n, M = m.mixes();
    std::vector<float> mixes(size_t(m.tokens * M)), rstd(size_t(m.tokens)), pre(size_t(m.tokens * n)),
        post(size_t(m.tokens * n)), comb(size_t(m.tokens * n * n)), u(size_t(m.tokens * m.d)),
        f(size_t(m.tokens * m.d)), y(size_t(m.tokens * m.width()));
    mhc_pre_forward(m, p.x.data(), p.fn.data(), p.scale.data(), p.base.data(), mixes.data(), rstd.data(), pre.data(),
                    post.data(), comb.data(), u.data());
    for (size_t i = 0; i < f.size(); ++i) f[i] = u[i] * u[i] * s[i];
    mhc_post_forward(m, p.x.data(), f.data(), post.data(), comb.data(), y.data());
    return weighted_sum(y.data(), r.data(), int64_t(y.size()));
  }

  Params gradients() {
    const int n = m.n, M = m.mixes();
    std::vector<float> mixes(size_t(m.tokens * M)), rstd(size_t(m.tokens)), pre(size_t(m.tokens * n)),
        post(size_t(m.tokens * n)), comb(size_t(m.tokens * n * n)), u(size_t(m.tokens * m.d)),
        f(size_t(m.tokens * m.d)), df(f.size()), du(f.size()), dpost(post.size()), dcomb(comb.size());
    mhc_pre_forward(m, p.x.data(), p.fn.data(), p.scale.data(), p.base.data(), mixes.data(), rstd.data(), pre.data(),
                    post.data(), comb.data(), u.data());
    for (size_t i = 0; i < f.size(); ++i) f[i] = u[i] * u[i] * s[i];
    Params g;
    g.x.assign(p.x.size(), 0.0f);
    g.fn.assign(p.fn.size(), 0.0f);
    g.scale.assign(3, 0.0f);
    g.base.assign(p.base.size(), 0.0f);
    mhc_post_backward(m, p.x.data(), f.data(), post.data(), comb.data(), r.data(), g.x.data(), df.data(), dpost.data(),
                      dcomb.data());
    for (size_t i = 0; i < f.size(); ++i) du[i] = df[i] * 2.0f * u[i] * s[i];
    mhc_pre_backward(m, p.x.data(), p.fn.data(), p.scale.data(), p.base.data(), mixes.data(), rstd.data(), pre.data(),
                     du.data(), dpost.data(), dcomb.data(), g.x.data(), g.fn.data(), g.scale.data(), g.base.data());
    return g;
  }
};

Block random_block(int64_t tokens, int n, int64_t d, int iters) {
  Block b;
  b.m = dims(tokens, n, d, iters);
  b.p = random_params(b.m, 7);
  // Diagonal-heavy combination logits, as at initialisation, and mixes large
  // enough that Sinkhorn's rounds matter.
  for (int j = 0; j < n; ++j) b.p.base[size_t(2 * n + j * n + j)] += 2.0f;
  b.s = random_vector(tokens * d, 8, 0.5f);
  b.r = random_vector(tokens * b.m.width(), 9);
  return b;
}

TEST(Mhc, BackwardMatchesFiniteDifferences) {
  for (int iters : {1, 3, 20}) {
    Block b = random_block(5, 4, 6, iters);
    Params g = b.gradients();
    auto loss = [&] { return b.loss(); };
    const std::string at = " (sinkhorn_iters " + std::to_string(iters) + ")";
    expect_gradient_matches("dx" + at, b.p.x.data(), int64_t(b.p.x.size()), g.x.data(), loss, 40, 1e-2f, 3e-2);
    expect_gradient_matches("dfn" + at, b.p.fn.data(), int64_t(b.p.fn.size()), g.fn.data(), loss, 40, 1e-2f, 3e-2);
    expect_gradient_matches("dscale" + at, b.p.scale.data(), 3, g.scale.data(), loss, 3, 1e-2f, 3e-2);
    expect_gradient_matches("dbase" + at, b.p.base.data(), int64_t(b.p.base.size()), g.base.data(), loss, 40, 1e-2f,
                            3e-2);
  }
}

TEST(Mhc, HeadBackwardMatchesFiniteDifferences) {
  MhcDims m = dims(4, 3, 5);
  std::vector<float> x = random_vector(m.tokens * m.width(), 1), fn = random_vector(3 * m.width(), 2, 0.2f);
  std::vector<float> scale = {0.8f}, base = random_vector(3, 3, 0.5f), r = random_vector(m.tokens * m.d, 4);
  auto forward = [&](std::vector<float>& mixes, std::vector<float>& rstd, std::vector<float>& w, std::vector<float>& y) {
    mixes.assign(size_t(m.tokens * 3), 0.0f);
    rstd.assign(size_t(m.tokens), 0.0f);
    w.assign(size_t(m.tokens * 3), 0.0f);
    y.assign(size_t(m.tokens * m.d), 0.0f);
    mhc_head_forward(m, x.data(), fn.data(), scale.data(), base.data(), mixes.data(), rstd.data(), w.data(), y.data());
  };
  auto loss = [&] {
    std::vector<float> mixes, rstd, w, y;
    forward(mixes, rstd, w, y);
    return weighted_sum(y.data(), r.data(), int64_t(y.size()));
  };
  std::vector<float> mixes, rstd, w, y;
  forward(mixes, rstd, w, y);
  std::vector<float> dx(x.size(), 0.0f), dfn(fn.size(), 0.0f), dscale(1, 0.0f), dbase(3, 0.0f);
  mhc_head_backward(m, x.data(), fn.data(), scale.data(), base.data(), mixes.data(), rstd.data(), w.data(), r.data(),
                    dx.data(), dfn.data(), dscale.data(), dbase.data());
  expect_gradient_matches("head dx", x.data(), int64_t(x.size()), dx.data(), loss, 30);
  expect_gradient_matches("head dfn", fn.data(), int64_t(fn.size()), dfn.data(), loss, 30);
  expect_gradient_matches("head dscale", scale.data(), 1, dscale.data(), loss, 1);
  expect_gradient_matches("head dbase", base.data(), 3, dbase.data(), loss, 3);
}

TEST(Mhc, ThreadCountDoesNotChangeTheBits) {
  // Enough tokens for the loops to run on the team and for several chunks
  // of the parameter-gradient reduction.
  Block b = random_block(300, 4, 64, 20);
  const Params one = memoe::testing::with_threads(1, [&] { return b.gradients(); });
  for (int threads : memoe::testing::kThreadCounts) {
    const Params g = memoe::testing::with_threads(threads, [&] { return b.gradients(); });
    EXPECT_EQ(g.x, one.x) << threads << " threads";
    EXPECT_EQ(g.fn, one.fn) << threads << " threads";
    EXPECT_EQ(g.scale, one.scale) << threads << " threads";
    EXPECT_EQ(g.base, one.base) << threads << " threads";
  }
}

}  // namespace
}  // namespace memoe
