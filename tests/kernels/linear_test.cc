#include "kernels/linear.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "grad_check.h"
#include "kernels/few_rows.h"
#include "thread_counts.h"

namespace memoe {
namespace {

using memoe::testing::expect_gradient_matches;
using memoe::testing::random_vector;
using memoe::testing::weighted_sum;

// y[i, o] = sum_k x[i, k] * w[o, k] (+ b[o]), in double.
std::vector<double> naive_linear(const std::vector<float>& x, const std::vector<float>& w, const float* bias,
                                 int64_t n, int64_t in, int64_t out) {
  std::vector<double> y(size_t(n * out));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t o = 0; o < out; ++o) {
      double s = bias ? double(bias[o]) : 0.0;
      for (int64_t k = 0; k < in; ++k) s += double(x[size_t(i * in + k)]) * w[size_t(o * in + k)];
      y[size_t(i * out + o)] = s;
    }
  return y;
}

TEST(Linear, ForwardMatchesNaiveLoops) {
  const int64_t n = 5, in = 7, out = 6;
  const std::vector<float> x = random_vector(n * in, 1), w = random_vector(out * in, 2), b = random_vector(out, 3);
  for (const float* bias : {static_cast<const float*>(nullptr), b.data()}) {
    std::vector<float> y(size_t(n * out), 42.0f);  // overwritten, not added to
    linear_forward(x.data(), w.data(), bias, n, in, out, y.data());
    const std::vector<double> want = naive_linear(x, w, bias, n, in, out);
    for (int64_t i = 0; i < n * out; ++i)
      EXPECT_NEAR(y[size_t(i)], want[size_t(i)], 1e-5) << (bias ? "with" : "without") << " bias, element " << i;
  }
}

TEST(Linear, BackwardMatchesFiniteDifferences) {
  const int64_t n = 4, in = 6, out = 5;
  std::vector<float> x = random_vector(n * in, 4), w = random_vector(out * in, 5), b = random_vector(out, 6),
                     r = random_vector(n * out, 7), y(size_t(n * out));
  auto loss = [&] {
    linear_forward(x.data(), w.data(), b.data(), n, in, out, y.data());
    return weighted_sum(y.data(), r.data(), n * out);
  };
  std::vector<float> dx(x.size(), 0.0f), dw(w.size(), 0.0f), db(b.size(), 0.0f);
  linear_backward(r.data(), x.data(), w.data(), n, in, out, dx.data(), dw.data(), db.data());
  expect_gradient_matches("dx", x.data(), n * in, dx.data(), loss, 24);
  expect_gradient_matches("dw", w.data(), out * in, dw.data(), loss, 30);
  expect_gradient_matches("dbias", b.data(), out, db.data(), loss);
}

TEST(Linear, BackwardAddsAndSkipsNullOutputs) {
  const int64_t n = 3, in = 4, out = 2;
  const std::vector<float> x = random_vector(n * in, 8), w = random_vector(out * in, 9),
                           dy = random_vector(n * out, 10);
  std::vector<float> dx1(x.size(), 0.0f), dw1(w.size(), 0.0f), db1(size_t(out), 0.0f);
  linear_backward(dy.data(), x.data(), w.data(), n, in, out, dx1.data(), dw1.data(), db1.data());
  std::vector<float> dx2(x.size(), 0.5f), dw2(w.size(), 0.5f), db2(size_t(out), 0.5f);
  linear_backward(dy.data(), x.data(), w.data(), n, in, out, dx2.data(), dw2.data(), db2.data());
  for (size_t i = 0; i < dx1.size(); ++i) EXPECT_NEAR(dx2[i], 0.5f + dx1[i], 1e-6f);
  for (size_t i = 0; i < dw1.size(); ++i) EXPECT_NEAR(dw2[i], 0.5f + dw1[i], 1e-6f);
  for (size_t i = 0; i < db1.size(); ++i) EXPECT_NEAR(db2[i], 0.5f + db1[i], 1e-6f);
  // Any output may be skipped; the others are unaffected.
  std::vector<float> dw3(w.size(), 0.0f);
  linear_backward(dy.data(), x.data(), w.data(), n, in, out, nullptr, dw3.data(), nullptr);
  for (size_t i = 0; i < dw1.size(); ++i) EXPECT_NEAR(dw3[i], dw1[i], 1e-6f);
  // n = 0 is a no-op.
  linear_backward(dy.data(), x.data(), w.data(), 0, in, out, dx2.data(), dw2.data(), db2.data());
  for (size_t i = 0; i < dx1.size(); ++i) EXPECT_NEAR(dx2[i], 0.5f + dx1[i], 1e-6f);
}

// gemm with both transposes, leading dimensions wider than the matrices, and
// alpha/beta, against plain loops.
TEST(Linear, GemmHonoursTransposesAndLeadingDimensions) {
  const int64_t m = 3, n = 4, k = 5, pad = 2;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      const int64_t a_rows = ta ? k : m, a_cols = ta ? m : k, b_rows = tb ? n : k, b_cols = tb ? k : n;
      const int64_t lda = a_cols + pad, ldb = b_cols + pad, ldc = n + pad;
      const std::vector<float> a = random_vector(a_rows * lda, 11), b = random_vector(b_rows * ldb, 12);
      std::vector<float> c = random_vector(m * ldc, 13);
      const std::vector<float> c0 = c;
      gemm(ta, tb, m, n, k, 0.5f, a.data(), lda, b.data(), ldb, 2.0f, c.data(), ldc);
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < ldc; ++j) {
          const size_t at = size_t(i * ldc + j);
          if (j >= n) {
            EXPECT_EQ(c[at], c0[at]) << "padding column touched";
            continue;
          }
          double s = 0.0;
          for (int64_t p = 0; p < k; ++p) {
            const double av = ta ? a[size_t(p * lda + i)] : a[size_t(i * lda + p)];
            const double bv = tb ? b[size_t(j * ldb + p)] : b[size_t(p * ldb + j)];
            s += av * bv;
          }
          EXPECT_NEAR(c[at], 0.5 * s + 2.0 * c0[at], 1e-5)
              << "ta " << ta << " tb " << tb << " (" << i << "," << j << ")";
        }
    }
}

// Decode's products (at most 4 rows, B transposed) take their own loop.
// Products of at most kFewRows rows go to kernels/few_rows.h's loop (tested
// against fp64 in few_rows_test.cc): the same bits, padding columns kept.
TEST(Linear, FewRowProductsRunTheFewRowLoop) {
  uint32_t seed = 900;
  for (int64_t m : {1, 4})
    for (float beta : {0.0f, 1.0f}) {
      const int64_t n = 37, k = 65, lda = k + 3, ldb = k + 1, ldc = n + 2;
      const std::vector<float> a = random_vector(m * lda, seed++), b = random_vector(n * ldb, seed++);
      std::vector<float> c = random_vector(m * ldc, seed++), expected = c;
      gemm(false, true, m, n, k, 1.0f, a.data(), lda, b.data(), ldb, beta, c.data(), ldc);
      few_rows_product(m, n, k, a.data(), lda, b.data(), ldb, beta, expected.data(), ldc);
      EXPECT_EQ(c, expected) << m << " rows, beta " << beta;
    }
  // Big enough to run on the thread team.
  const std::vector<float> a = random_vector(3 * 2000, 1), b = random_vector(1000 * 2000, 2);
  memoe::testing::expect_same_bits_for_thread_counts("few-row gemm", [&] {
    std::vector<float> c(3 * 1000);
    gemm(false, true, 3, 1000, 2000, 1.0f, a.data(), 2000, b.data(), 2000, 0.0f, c.data(), 1000);
    return c;
  });
}

}  // namespace
}  // namespace memoe
