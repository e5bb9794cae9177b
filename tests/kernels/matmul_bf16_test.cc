// bf16 matrix products (gemm_bf16 and both libraries behind it) against an
// fp64 reference of the same bf16-rounded inputs, and the fp32 <-> bf16
// conversions against core/bf16.h.
//
// Tolerance: products of two bf16 numbers (8-bit significands) are exact in
// fp32, so the only error is fp32 accumulation over k terms plus the alpha
// scaling and the beta * C sum: at most (k + 2) * 2^-24 relative to
// |alpha| * sum_p |a_ip||b_pj| + |beta * c_ij| (the classic gamma_k bound for
// recursive summation, which blocked or tree-shaped sums only improve on).
// Rounding the output or the accumulator to bf16 (2^-9) would exceed it for
// every k used here.
//
// The same tests run a second time with ONEDNN_MAX_CPU_ISA=AVX2 (the ctest
// entry Bf16.Avx2Fallback in CMakeLists.txt), oneDNN's path for CPUs
// without bf16 instructions.
#include <gtest/gtest.h>

#include <array>
#include <bit>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/bf16.h"
#include "core/error.h"
#include "grad_check.h"
#include "kernels/linear.h"
#include "kernels/matmul_bf16.h"
#include "thread_counts.h"

namespace memoe {
namespace {

using memoe::testing::random_vector;

// The libraries this machine has: OpenBLAS only where it exports sbgemm.
std::vector<Bf16Library> libraries() {
  if (openblas_has_sbgemm()) return {Bf16Library::onednn, Bf16Library::openblas};
  return {Bf16Library::onednn};
}

std::vector<uint16_t> bf16_of(const std::vector<float>& x) {
  std::vector<uint16_t> y(x.size());
  to_bf16(x.data(), int64_t(x.size()), y.data());
  return y;
}

struct Case {
  bool trans_a, trans_b;
  int64_t m, n, k, pad;  // leading dimensions are the stored width + pad
  float alpha, beta;
};

std::string describe(const Case& c) {
  return std::to_string(c.m) + "x" + std::to_string(c.n) + "x" + std::to_string(c.k) + (c.trans_a ? " At" : " A") +
         (c.trans_b ? " Bt" : " B") + " pad " + std::to_string(c.pad) + " alpha " + std::to_string(c.alpha) +
         " beta " + std::to_string(c.beta);
}

// Runs one case through `library` and checks every element against fp64.
void check_case(Bf16Library library, const Case& c, uint32_t seed) {
  const int64_t a_rows = c.trans_a ? c.k : c.m, a_cols = c.trans_a ? c.m : c.k;
  const int64_t b_rows = c.trans_b ? c.n : c.k, b_cols = c.trans_b ? c.k : c.n;
  const int64_t lda = a_cols + c.pad, ldb = b_cols + c.pad, ldc = c.n + c.pad;
  const std::vector<uint16_t> a = bf16_of(random_vector(a_rows * lda, seed));
  const std::vector<uint16_t> b = bf16_of(random_vector(b_rows * ldb, seed + 1));
  std::vector<float> c0 = random_vector(c.m * ldc, seed + 2);
  // beta = 0 must not read C: poison it.
  if (c.beta == 0.0f)
    for (float& x : c0) x = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> out = c0;
  gemm_bf16_with(library, c.trans_a, c.trans_b, c.m, c.n, c.k, c.alpha, a.data(), lda, b.data(), ldb, c.beta,
                 out.data(), ldc);
  auto at = [](const std::vector<uint16_t>& x, int64_t ld, bool trans, int64_t i, int64_t j) {
    return double(bf16_to_float(trans ? x[size_t(j * ld + i)] : x[size_t(i * ld + j)]));
  };
  int64_t bad = 0;
  for (int64_t i = 0; i < c.m; ++i) {
    for (int64_t j = 0; j < c.n; ++j) {
      double sum = 0, magnitude = 0;
      for (int64_t p = 0; p < c.k; ++p) {
        const double term = at(a, lda, c.trans_a, i, p) * at(b, ldb, c.trans_b, p, j);
        sum += term;
        magnitude += std::fabs(term);
      }
      const double c_in = c.beta == 0.0f ? 0.0 : double(c0[size_t(i * ldc + j)]);
      const double expected = double(c.alpha) * sum + double(c.beta) * c_in;
      const double tolerance =
          double(c.k + 2) * std::ldexp(1.0, -24) * (std::fabs(c.alpha) * magnitude + std::fabs(c.beta * c_in));
      const double got = out[size_t(i * ldc + j)];
      if (!(std::fabs(got - expected) <= tolerance) && ++bad <= 3)
        ADD_FAILURE() << describe(c) << " library " << int(library) << ": C[" << i << "," << j << "] = " << got
                      << ", expected " << expected << " +- " << tolerance;
    }
    // Padding between rows of C is never written.
    for (int64_t j = c.n; j < ldc && i + 1 < c.m; ++j)
      ASSERT_EQ(std::bit_cast<uint32_t>(out[size_t(i * ldc + j)]), std::bit_cast<uint32_t>(c0[size_t(i * ldc + j)]))
          << describe(c) << ": padding of C written";
  }
  EXPECT_EQ(bad, 0) << describe(c) << " library " << int(library);
}

TEST(MatmulBf16, MatchesFp64ReferenceOfRoundedInputs) {
  // m = 1 and n = 1, k prime and not a multiple of any block, k below and
  // above 256-deep slices, padded and unpadded leading dimensions.
  const int64_t shapes[][3] = {{1, 37, 131}, {29, 1, 77}, {67, 45, 301}, {130, 96, 1031}, {5, 300, 3}};
  uint32_t seed = 1;
  for (Bf16Library library : libraries())
    for (const auto& shape : shapes)
      for (int trans = 0; trans < 4; ++trans)
        for (float beta : {0.0f, 1.0f}) {
          const Case c{bool(trans & 1), bool(trans & 2), shape[0], shape[1], shape[2], (seed % 3) * 5, 1.0f, beta};
          check_case(library, c, seed += 3);
        }
}

TEST(MatmulBf16, ScalesByAlphaAndBeta) {
  for (Bf16Library library : libraries()) {
    check_case(library, {false, true, 33, 70, 200, 2, 0.5f, 0.25f}, 7);
    check_case(library, {true, false, 40, 17, 513, 0, -2.0f, 1.0f}, 8);
  }
}

TEST(MatmulBf16, ChosenLibraryMatchesReference) {
  // gemm_bf16 itself, on shapes like the small preset's (rows x out x in).
  const int64_t shapes[][3] = {{256, 384, 256}, {64, 256, 128}, {1, 8192, 256}};
  for (const auto& shape : shapes)
    for (int trans = 0; trans < 4; ++trans) {
      const Case c{bool(trans & 1), bool(trans & 2), shape[0], shape[1], shape[2], 0, 1.0f, 1.0f};
      const Bf16Library library = bf16_library_for(c.trans_a, c.trans_b, c.m, c.n, c.k);
      check_case(library, c, uint32_t(100 + trans));
    }
  std::vector<uint16_t> a = bf16_of(random_vector(6 * 5, 1)), b = bf16_of(random_vector(5 * 4, 2));
  std::vector<float> direct(6 * 4), chosen(6 * 4);
  gemm_bf16(false, false, 6, 4, 5, 1.0f, a.data(), 5, b.data(), 4, 0.0f, chosen.data(), 4);
  gemm_bf16_with(bf16_library_for(false, false, 6, 4, 5), false, false, 6, 4, 5, 1.0f, a.data(), 5, b.data(), 4, 0.0f,
                 direct.data(), 4);
  EXPECT_EQ(direct, chosen);
}

TEST(MatmulBf16, EmptyDepthScalesC) {
  for (Bf16Library library : libraries()) {
    std::vector<float> c = {1, 2, 3, 4};
    gemm_bf16_with(library, false, false, 2, 2, 0, 1.0f, nullptr, 1, nullptr, 2, 0.5f, c.data(), 2);
    EXPECT_EQ(c, (std::vector<float>{0.5f, 1, 1.5f, 2}));
  }
  EXPECT_THROW(gemm_bf16(false, false, -1, 2, 2, 1.0f, nullptr, 2, nullptr, 2, 0.0f, nullptr, 2), Error);
}

TEST(MatmulBf16, CacheGivesTheSameResultOnReuseAndInterleaved) {
  const int64_t first[3] = {50, 70, 300}, second[3] = {71, 33, 129};
  auto run = [](const int64_t* s, float beta) {
    const std::vector<uint16_t> a = bf16_of(random_vector(s[0] * s[2], 11)), b = bf16_of(random_vector(s[2] * s[1], 12));
    std::vector<float> c = random_vector(s[0] * s[1], 13);
    gemm_bf16_with(Bf16Library::onednn, false, true, s[0], s[1], s[2], 1.0f, a.data(), s[2], b.data(), s[2], beta,
                   c.data(), s[1]);
    return c;
  };
  const std::vector<float> x0 = run(first, 0.0f), y0 = run(second, 1.0f);
  const int64_t cached = onednn_cached_primitives();
  for (int round = 0; round < 3; ++round) {
    EXPECT_EQ(run(first, 0.0f), x0);
    EXPECT_EQ(run(second, 1.0f), y0);
    EXPECT_NE(run(first, 1.0f), x0);  // beta is part of the key: C is now added
  }
  // Only (first, beta 1) was new; without bf16 primitives (below AVX-512)
  // nothing is cached.
  EXPECT_EQ(onednn_cached_primitives(), cached == 0 ? 0 : cached + 1);
}

// gemm_bf16's own loop for decoding's few-row products (m <= 4, A @ B^T):
// the same contract, checked against fp64, with beta 0 (C unread) and 1,
// padded leading dimensions, and the same bits on 1 and 2 threads.
TEST(MatmulBf16, FewRowProductsMatchTheReference) {
  uint32_t seed = 700;
  for (int64_t m : {1, 2, 3, 4})
    for (int64_t n : {1, 37, 300})
      for (int64_t k : {1, 64, 1031})
        for (float beta : {0.0f, 1.0f}) {
          const int64_t lda = k + 3, ldb = k + 1, ldc = n + 2;
          const std::vector<uint16_t> a = bf16_of(random_vector(m * lda, seed++));
          const std::vector<uint16_t> b = bf16_of(random_vector(n * ldb, seed++));
          const std::vector<float> c0 = random_vector(m * ldc, seed++);
          std::vector<float> c = c0;
          if (beta == 0.0f) std::fill(c.begin(), c.end(), std::numeric_limits<float>::quiet_NaN());
          gemm_bf16(false, true, m, n, k, 1.0f, a.data(), lda, b.data(), ldb, beta, c.data(), ldc);
          for (int64_t i = 0; i < m; ++i)
            for (int64_t j = 0; j < n; ++j) {
              double sum = 0, mag = 0;
              for (int64_t p = 0; p < k; ++p) {
                const double t = double(bf16_to_float(a[size_t(i * lda + p)])) * bf16_to_float(b[size_t(j * ldb + p)]);
                sum += t;
                mag += std::fabs(t);
              }
              const double c_in = beta == 0.0f ? 0.0 : double(c0[size_t(i * ldc + j)]);
              const double tol = double(k + 2) * std::ldexp(1.0, -24) * (mag + std::fabs(c_in));
              ASSERT_LE(std::fabs(double(c[size_t(i * ldc + j)]) - (sum + c_in)), tol)
                  << m << "x" << n << "x" << k << " beta " << beta << " at " << i << "," << j;
            }
        }
  // Bits across thread counts, on a product big enough to be threaded.
  const std::vector<uint16_t> a = bf16_of(random_vector(3 * 4096, 1)), b = bf16_of(random_vector(300 * 4096, 2));
  std::vector<float> one(3 * 300), two(3 * 300);
  for (int threads : {1, 2})
    memoe::testing::with_threads(threads, [&] {
      gemm_bf16(false, true, 3, 300, 4096, 1.0f, a.data(), 4096, b.data(), 4096, 0.0f,
                (threads == 1 ? one : two).data(), 300);
      return 0;
    });
  EXPECT_EQ(one, two);
}

TEST(MatmulBf16, VaryingRowCountsShareOnePrimitive) {
  // A routed expert's products: forward (m rows varies), dx (m), dW (k):
  // twelve row counts per family must all be right. Where K is a multiple
  // of 16 the tiles' rows are padded to one (exact primitives: at most one
  // per multiple of 16 up to the 256-row tile); where it is not, one
  // run-time-shaped primitive serves every row count.
  const int64_t cached = onednn_cached_primitives();
  uint32_t seed = 300;
  for (int64_t rows : {40, 41, 97, 1, 130, 64, 333, 7, 250, 512, 3, 129}) {
    check_case(Bf16Library::onednn, {false, true, rows, 48, 32, 0, 1.0f, 0.0f}, seed += 3);  // y = x W^T
    check_case(Bf16Library::onednn, {false, false, rows, 32, 48, 0, 1.0f, 1.0f}, seed += 3);  // dx += dy W
    check_case(Bf16Library::onednn, {true, false, 48, 32, rows, 0, 1.0f, 1.0f}, seed += 3);   // dW += dy^T x
  }
  const int64_t made = onednn_cached_primitives() - cached;
  if (cached > 0 || made > 0) {
    // Forward and dx: rows padded to 16, 48, 64, 112, 144, 256 and the 80-row
    // tail of 333 (7 each); dW: the exact k = 64 and 512 and one family.
    EXPECT_LE(made, 7 + 7 + 3) << "one primitive per padded row count, and one family for odd K";
  }
}

TEST(MatmulBf16, ConcurrentProductsOfOneShapeAreEachRight) {
  // The routed experts run their products from several threads at once, on
  // one shared primitive per shape; each must get what it gets alone.
  constexpr int kTasks = 16;
  const int64_t m = 37, n = 48, k = 160;
  std::vector<std::vector<uint16_t>> a(kTasks), b(kTasks);
  std::vector<std::vector<float>> alone(kTasks), together(kTasks);
  for (int t = 0; t < kTasks; ++t) {
    a[size_t(t)] = bf16_of(random_vector(m * k, uint32_t(500 + t)));
    b[size_t(t)] = bf16_of(random_vector(n * k, uint32_t(600 + t)));
    alone[size_t(t)].assign(size_t(m * n), 0.0f);
    together[size_t(t)].assign(size_t(m * n), 0.0f);
  }
  for (int repeat = 0; repeat < 20; ++repeat) {
    // Serial first, inside a one-thread region, so both use the same primitive.
#pragma omp parallel for num_threads(1)
    for (int t = 0; t < kTasks; ++t)
      gemm_bf16(false, true, m, n, k, 1.0f, a[size_t(t)].data(), k, b[size_t(t)].data(), k, 0.0f,
                alone[size_t(t)].data(), n);
#pragma omp parallel for num_threads(2) schedule(dynamic, 1)
    for (int t = 0; t < kTasks; ++t)
      gemm_bf16(false, true, m, n, k, 1.0f, a[size_t(t)].data(), k, b[size_t(t)].data(), k, 0.0f,
                together[size_t(t)].data(), n);
    for (int t = 0; t < kTasks; ++t) ASSERT_EQ(together[size_t(t)], alone[size_t(t)]) << "task " << t << ", repeat " << repeat;
  }
}

TEST(MatmulBf16, ConversionRoundsLikeCoreBf16) {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> edge = {0.0f, -0.0f, 1.0f, -1.0f, inf, -inf, std::numeric_limits<float>::quiet_NaN(),
                             std::numeric_limits<float>::max(), std::numeric_limits<float>::min(),
                             std::numeric_limits<float>::denorm_min(), -std::numeric_limits<float>::denorm_min()};
  for (uint32_t bits : {0x3f808000u,    // tie, kept bit even: rounds down to 0x3f80
                        0x3f818000u,    // tie, kept bit odd: rounds up to 0x3f82
                        0x3f808001u,    // just above a tie: up
                        0x3f807fffu,    // just below: down
                        0x7f7fffffu,    // max float: rounds to inf
                        0x00008000u,    // subnormal tie: down to 0
                        0x00018000u,    // subnormal tie: up to 0x0002
                        0x007fffffu,    // largest subnormal: rounds up to min normal
                        0x7f800001u,    // signalling NaN with only a low bit: must not become inf
                        0xff800001u,    // negative one
                        0x7fc00000u, 0xffffffffu})
    edge.push_back(std::bit_cast<float>(bits));
  std::mt19937 gen(5);
  for (int i = 0; i < 100003; ++i) edge.push_back(std::bit_cast<float>(uint32_t(gen())));  // odd length: a tail
  const std::vector<uint16_t> got = bf16_of(edge);
  int64_t bad = 0;
  for (size_t i = 0; i < edge.size(); ++i) {
    if (got[i] != float_to_bf16(edge[i]) && ++bad <= 5)
      ADD_FAILURE() << std::hex << "bits 0x" << std::bit_cast<uint32_t>(edge[i]) << ": 0x" << got[i] << ", expected 0x"
                    << float_to_bf16(edge[i]);
    if (std::isnan(edge[i])) {
      EXPECT_TRUE(std::isnan(bf16_to_float(got[i])));
    }
  }
  EXPECT_EQ(bad, 0);
  EXPECT_EQ(got[4], 0x7f80u);
  EXPECT_EQ(got[11], 0x3f80u);
  EXPECT_EQ(got[12], 0x3f82u);

  // The way back is exact for every bf16 pattern.
  std::vector<uint16_t> all(65536);
  for (size_t i = 0; i < all.size(); ++i) all[i] = uint16_t(i);
  std::vector<float> wide(all.size());
  from_bf16(all.data(), int64_t(all.size()), wide.data());
  for (size_t i = 0; i < all.size(); ++i) ASSERT_EQ(std::bit_cast<uint32_t>(wide[i]), uint32_t(i) << 16);
}

TEST(MatmulBf16, ReportsTheIsaItRunsOn) {
  const std::string isa = onednn_isa_name();
  const char* cap = std::getenv("ONEDNN_MAX_CPU_ISA");
  if (cap && std::string(cap) == "AVX2") {
    // The fallback run: oneDNN must really be capped at AVX2 here, where
    // 2.6 makes no bf16 matmul, so the products went through widening.
    EXPECT_EQ(isa, "avx2");
    EXPECT_FALSE(bf16_native());
    EXPECT_EQ(onednn_impl_name(false, true, 64, 64, 64).rfind("fp32 gemm", 0), 0u)
        << onednn_impl_name(false, true, 64, 64, 64);
  }
  if (bf16_native()) {
    EXPECT_TRUE(isa == "avx512_core_bf16" || isa == "avx512_core_amx") << isa;
  }
  EXPECT_NE(bf16_description().find(isa), std::string::npos) << bf16_description();
  EXPECT_FALSE(openblas_core_name().empty());
  if (!openblas_has_sbgemm()) {
    std::vector<float> c(1);
    EXPECT_THROW(gemm_bf16_with(Bf16Library::openblas, false, false, 1, 1, 1, 1.0f, nullptr, 1, nullptr, 1, 0.0f,
                                c.data(), 1),
                 Error);
  }
}

}  // namespace
}  // namespace memoe

namespace memoe {
namespace {

// gemm_bf16's bits are a function of the product alone: the same on 1, 2
// and 3 threads for every kind of shape a model makes (deep and narrow like
// a weight gradient, where oneDNN would split K between threads when it
// plans for several: exact 64 x 64 x 4096 and run-time-shaped 16 x 16 x 8192
// both did; K not a multiple of 16; wide ones), each transposition.
TEST(MatmulBf16, ThreadCountDoesNotChangeTheBits) {
  struct Shape {
    bool ta, tb;
    int64_t m, n, k;
  };
  for (const Shape& s : {Shape{true, false, 32, 40, 6000}, Shape{true, false, 304, 200, 256},
                         Shape{true, false, 64, 64, 4096}, Shape{false, false, 16, 16, 8192},
                         Shape{false, true, 300, 256, 40}, Shape{false, true, 1000, 700, 96},
                         Shape{false, false, 520, 96, 1030}, Shape{true, false, 40, 40, 6000},
                         Shape{false, false, 64, 64, 4100}}) {
    const std::vector<uint16_t> a = bf16_of(random_vector(s.m * s.k, 1)), b = bf16_of(random_vector(s.k * s.n, 2));
    const int64_t lda = s.ta ? s.m : s.k, ldb = s.tb ? s.k : s.n;
    memoe::testing::expect_same_bits_for_thread_counts(
        "bf16 product " + std::to_string(s.m) + "x" + std::to_string(s.n) + "x" + std::to_string(s.k), [&] {
          std::vector<float> c(size_t(s.m * s.n), 0.5f);
          gemm_bf16(s.ta, s.tb, s.m, s.n, s.k, 1.0f, a.data(), lda, b.data(), ldb, 1.0f, c.data(), s.n);
          return c;
        });
  }
}

// A row of C = A op(B) has the same bits whatever rows surround it (a
// data-parallel rank holding fewer sequences, an evaluation batch of another
// size): the product of every row count from 5 (above the few-row loop) to
// 600 gives rows 0..4 the bits of the 4096-row product, on 1 and 2 threads,
// for K a multiple of 16 (exact primitives) and not (run-time-shaped ones).
// A stored transposed (dW = dY^T X) has weight outputs for rows, fixed by
// the model: those tiles are not padded, and their rows are only checked
// where they are multiples of 16.
//
// Below AVX-512 the inputs are widened to the fp32 gemm, whose OpenBLAS
// kernels order a block's edge rows differently: there a row's bits do
// depend on the row count (which the data-parallel tests allow for), so
// this holds for oneDNN's products only.
TEST(MatmulBf16, ARowsBitsDoNotDependOnTheRowCount) {
  if (onednn_impl_name(false, true, 64, 64, 64).rfind("fp32 gemm", 0) == 0) GTEST_SKIP() << "bf16 widened to fp32";
  for (const bool trans_a : {false, true})
    for (const int64_t k : {256, 40, 1040}) {
      const int64_t n = 96, full = 4096;
      const std::vector<uint16_t> a = bf16_of(random_vector(full * k, 3)), b = bf16_of(random_vector(n * k, 4));
      // op(A)'s first `m` rows: a prefix of the rows, or of the columns when
      // stored transposed (then at the full product's leading dimension).
      auto product = [&](int64_t m) {
        std::vector<float> c(size_t(m * n));
        gemm_bf16(trans_a, true, m, n, k, 1.0f, a.data(), trans_a ? full : k, b.data(), k, 0.0f, c.data(), n);
        c.resize(size_t(5 * n));
        return c;
      };
      const std::vector<float> want = product(full);
      for (const int threads : {1, 2})
        for (const int64_t m : {5, 16, 17, 40, 255, 256, 257, 300, 600}) {
          if (trans_a && m % 16 != 0 && k % 16 == 0) continue;
          const std::vector<float> got = memoe::testing::with_threads(threads, [&] { return product(m); });
          EXPECT_EQ(memoe::testing::first_difference(want, got), -1)
              << m << " rows, k " << k << (trans_a ? ", A transposed" : "") << ", " << threads << " threads";
        }
    }
}

}  // namespace
}  // namespace memoe
