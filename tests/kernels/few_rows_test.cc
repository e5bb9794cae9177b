#include "kernels/few_rows.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/bf16.h"
#include "grad_check.h"
#include "thread_counts.h"

namespace memoe {
namespace {

using memoe::testing::random_vector;

double widened(float x) { return x; }
double widened(uint16_t x) { return bf16_to_float(x); }

template <class W>
std::vector<W> weights_of(const std::vector<float>& x);
template <>
std::vector<float> weights_of(const std::vector<float>& x) {
  return x;
}
template <>
std::vector<uint16_t> weights_of(const std::vector<float>& x) {
  std::vector<uint16_t> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = float_to_bf16(x[i]);
  return y;
}

// Both loops (the AVX-512 one where this CPU has it, and the portable one)
// against fp64, for every row count and depths around the 16- and 64-wide
// steps and their masked tails, with beta 0 (C unread) and 1, padded leading
// dimensions, and padding columns left alone.
template <class W>
void expect_matches_fp64(bool portable) {
  uint32_t seed = 900;
  for (int64_t m = 1; m <= kFewRows; ++m)
    for (int64_t n : {1, 37})
      for (int64_t k : {1, 15, 16, 17, 63, 64, 65, 130, 1031})
        for (float beta : {0.0f, 1.0f}) {
          const int64_t lda = k + 3, ldb = k + 1, ldc = n + 2;
          const std::vector<float> a = random_vector(m * lda, seed++);
          const std::vector<W> b = weights_of<W>(random_vector(n * ldb, seed++));
          const std::vector<float> c0 = random_vector(m * ldc, seed++);
          std::vector<float> c = c0;
          if (beta == 0.0f)
            for (int64_t i = 0; i < m; ++i)
              for (int64_t j = 0; j < n; ++j) c[size_t(i * ldc + j)] = std::nanf("");
          few_rows_product(m, n, k, a.data(), lda, b.data(), ldb, beta, c.data(), ldc, portable);
          for (int64_t i = 0; i < m; ++i)
            for (int64_t j = 0; j < ldc; ++j) {
              const size_t at = size_t(i * ldc + j);
              if (j >= n) {
                ASSERT_EQ(c[at], c0[at]) << "padding column touched";
                continue;
              }
              const double c_in = beta == 0.0f ? 0.0 : double(c0[at]);
              double sum = c_in, mag = std::fabs(c_in);
              for (int64_t p = 0; p < k; ++p) {
                const double t = double(a[size_t(i * lda + p)]) * widened(b[size_t(j * ldb + p)]);
                sum += t;
                mag += std::fabs(t);
              }
              ASSERT_LE(std::fabs(c[at] - sum), double(k + 2) * std::ldexp(1.0, -24) * mag)
                  << (portable ? "portable " : "vectorised ") << m << "x" << n << "x" << k << " beta " << beta
                  << " at " << i << "," << j;
            }
        }
}

TEST(FewRows, Fp32WeightsMatchFp64) {
  expect_matches_fp64<float>(false);
  expect_matches_fp64<float>(true);
}

TEST(FewRows, Bf16WeightsMatchFp64) {
  expect_matches_fp64<uint16_t>(false);
  expect_matches_fp64<uint16_t>(true);
}

TEST(FewRows, SameBitsForAnyThreadCount) {
  // Past kFewRowsThreadedWeights, so the outputs are split over the team.
  const int64_t n = 1100, k = 4000;
  ASSERT_GT(n * k, kFewRowsThreadedWeights);
  const std::vector<float> a = random_vector(3 * k, 1), b = random_vector(n * k, 2);
  const std::vector<uint16_t> b16 = weights_of<uint16_t>(b);
  for (bool portable : {false, true}) {
    memoe::testing::expect_same_bits_for_thread_counts("few-row fp32", [&] {
      std::vector<float> c(size_t(3 * n));
      few_rows_product(3, n, k, a.data(), k, b.data(), k, 0.0f, c.data(), n, portable);
      return c;
    });
    memoe::testing::expect_same_bits_for_thread_counts("few-row bf16", [&] {
      std::vector<float> c(size_t(3 * n));
      few_rows_product(3, n, k, a.data(), k, b16.data(), k, 0.0f, c.data(), n, portable);
      return c;
    });
  }
}

}  // namespace
}  // namespace memoe
