#include "kernels/engram_hash.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <algorithm>
#include <random>
#include <set>
#include <vector>

#include "core/error.h"

namespace memoe {
namespace {

using I64 = std::vector<int64_t>;

// Spec §5.2 test vectors (numpy 1.24, seed 0).
TEST(EngramHash, MultipliersMatchSpecVectors) {
  EXPECT_EQ(engram_hash_multipliers(1000, 3, 0, 1), (I64{7593627661414631, 479593001838623, 3563315849468963}));
  EXPECT_EQ(engram_hash_multipliers(1000, 3, 0, 15), (I64{2865651367968763, 5551170510236881, 5343936160617101}));
  EXPECT_EQ(engram_hash_multipliers(99092, 4, 0, 1),
            (I64{76632096046245, 4839876093313, 35959672319349, 73987337458391}));
  EXPECT_EQ(engram_hash_multipliers(99092, 4, 0, 14),
            (I64{67716810739261, 51510806800915, 30921347202721, 82619226485591}));
}

TEST(EngramHash, MultipliersAreOddAndCannotOverflow) {
  const int64_t vocab = 129280;
  for (int64_t m : engram_hash_multipliers(vocab, 4, 7, 3)) {
    EXPECT_EQ(m % 2, 1);
    EXPECT_LE(m, INT64_MAX / vocab);  // (V'-1) * m fits in int64
  }
  // hb = 1 when V' > 2^62: every draw is 0, every multiplier 1.
  EXPECT_EQ(engram_hash_multipliers(int64_t{1} << 62, 2, 0, 0), (I64{1, 1}));
}

TEST(EngramHash, MultipliersRejectBadInput) {
  EXPECT_THROW(engram_hash_multipliers(0, 3, 0, 1), Error);
  EXPECT_THROW(engram_hash_multipliers(1000, 1, 0, 1), Error);
  EXPECT_THROW(engram_hash_multipliers(1000, 3, -1, 1), Error);
  EXPECT_THROW(engram_hash_multipliers(1000, 3, 0, -1), Error);
  EXPECT_THROW(engram_hash_multipliers(1000, 3, INT64_MAX, 1), Error);
}

TEST(EngramHash, PrimesMatchSpecVector) {
  const auto primes = engram_table_primes({1, 15}, 3, 2, {1000, 1000});
  ASSERT_EQ(primes.size(), 2u);
  EXPECT_EQ(primes[0], (I64{1009, 1013, 1019, 1021}));
  EXPECT_EQ(primes[1], (I64{1031, 1033, 1039, 1049}));
}

TEST(EngramHash, PrimesAreDistinctPrimesAboveTheirBase) {
  const I64 bases{646400, 646000};
  const auto primes = engram_table_primes({1, 15, 30}, 3, 8, bases);
  std::set<int64_t> seen;
  for (const I64& layer : primes) {
    ASSERT_EQ(layer.size(), 16u);
    for (size_t i = 0; i < layer.size(); ++i) {
      const int64_t p = layer[i];
      EXPECT_GE(p, bases[i / 8]);
      EXPECT_TRUE(seen.insert(p).second) << p << " repeated";
      for (int64_t d = 2; d * d <= p; ++d) ASSERT_NE(p % d, 0) << p << " is not prime";
    }
  }
  // A prime base is itself the first table size (start = base - 1).
  EXPECT_EQ(engram_table_primes({0}, 2, 1, {1009})[0], (I64{1009}));
  EXPECT_THROW(engram_table_primes({1}, 3, 2, {1000}), Error);
  EXPECT_THROW(engram_table_primes({1}, 3, 0, {1000, 1000}), Error);
  EXPECT_THROW(engram_table_primes({1}, 3, 2, {1000, 0}), Error);
}

TEST(EngramHash, RowsMatchSpecVector) {
  const I64 mult = engram_hash_multipliers(1000, 3, 0, 1);
  const I64 primes{1009, 1013, 1019, 1021};
  const I64 ids{5, 17, 17, 999, 0, 42};
  I64 rows(ids.size() * 4);
  engram_hash_rows(ids.data(), 1, 6, 0, mult.data(), 3, primes.data(), 2, rows.data());
  EXPECT_EQ(rows, (I64{521, 1866, 2829, 3422, 977, 1270, 2222, 3063, 165, 1878, 2194, 3582,
                       404, 1152, 2029, 3758, 315, 1929, 2739, 3781, 744, 1522, 2563, 3138}));
}

// Straight from the formula, one (token, n, head) at a time.
I64 naive_rows(const I64& ids, int64_t batch, int64_t seq_len, int64_t pad, const I64& mult, int max_ngram,
               const I64& primes, int n_head) {
  const int n_tables = (max_ngram - 1) * n_head;
  I64 rows(static_cast<size_t>(batch * seq_len * n_tables));
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t < seq_len; ++t)
      for (int n = 2; n <= max_ngram; ++n)
        for (int j = 0; j < n_head; ++j) {
          int64_t mix = 0;
          for (int k = 0; k < n; ++k) {
            const int64_t c = t - k < 0 ? pad : ids[static_cast<size_t>(b * seq_len + t - k)];
            mix ^= c * mult[static_cast<size_t>(k)];
          }
          const int idx = (n - 2) * n_head + j;
          int64_t offset = 0;
          for (int i = 0; i < idx; ++i) offset += primes[static_cast<size_t>(i)];
          rows[static_cast<size_t>((b * seq_len + t) * n_tables + idx)] = offset + mix % primes[static_cast<size_t>(idx)];
        }
  return rows;
}

TEST(EngramHash, RowsMatchNaiveFormulaOnRandomInput) {
  std::mt19937_64 gen(123);
  const int64_t vocab = 99092, batch = 3, seq_len = 11;
  const int max_ngram = 4, n_head = 3;
  const I64 mult = engram_hash_multipliers(vocab, max_ngram, 5, 2);
  const I64 primes = engram_table_primes({2}, max_ngram, n_head, {5000, 7000, 9000})[0];
  I64 ids(static_cast<size_t>(batch * seq_len));
  for (int64_t& c : ids) c = static_cast<int64_t>(gen() % vocab);
  ids[3] = vocab - 1;  // the largest id must not overflow
  const int64_t pad = 77;
  I64 rows(ids.size() * (max_ngram - 1) * n_head);
  engram_hash_rows(ids.data(), batch, seq_len, pad, mult.data(), max_ngram, primes.data(), n_head, rows.data());
  EXPECT_EQ(rows, naive_rows(ids, batch, seq_len, pad, mult, max_ngram, primes, n_head));
  int64_t total = 0;
  for (int64_t p : primes) total += p;
  for (int64_t r : rows) {
    EXPECT_GE(r, 0);
    EXPECT_LT(r, total);
  }
}

TEST(EngramHash, PadAffectsOnlyTheFirstNMinus1PositionsOfEachSequence) {
  std::mt19937_64 gen(7);
  const int64_t vocab = 1000, batch = 2, seq_len = 9;
  const int max_ngram = 3, n_head = 2;
  const I64 mult = engram_hash_multipliers(vocab, max_ngram, 0, 1);
  const I64 primes{1009, 1013, 1019, 1021};
  I64 ids(static_cast<size_t>(batch * seq_len));
  for (int64_t& c : ids) c = static_cast<int64_t>(gen() % vocab);
  const size_t width = 4;
  I64 rows_a(ids.size() * width), rows_b(ids.size() * width);
  engram_hash_rows(ids.data(), batch, seq_len, 0, mult.data(), max_ngram, primes.data(), n_head, rows_a.data());
  engram_hash_rows(ids.data(), batch, seq_len, 3, mult.data(), max_ngram, primes.data(), n_head, rows_b.data());
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t < seq_len; ++t) {
      const auto first = rows_a.begin() + (b * seq_len + t) * width;
      const bool same = std::equal(first, first + width, rows_b.begin() + (b * seq_len + t) * width);
      EXPECT_EQ(same, t >= max_ngram - 1) << "batch " << b << " position " << t;
    }
}

TEST(EngramHash, WindowsDoNotCrossSequences) {
  const I64 mult = engram_hash_multipliers(1000, 3, 0, 1);
  const I64 primes{1009, 1013, 1019, 1021};
  const I64 alone{5, 17, 17, 999, 0, 42};
  I64 pair{1, 2, 3, 4, 998, 997};
  pair.insert(pair.end(), alone.begin(), alone.end());
  I64 rows_alone(24), rows_pair(48);
  engram_hash_rows(alone.data(), 1, 6, 0, mult.data(), 3, primes.data(), 2, rows_alone.data());
  engram_hash_rows(pair.data(), 2, 6, 0, mult.data(), 3, primes.data(), 2, rows_pair.data());
  EXPECT_EQ(I64(rows_pair.begin() + 24, rows_pair.end()), rows_alone);
}

TEST(EngramHash, RowsRejectBadIds) {
  const I64 mult = engram_hash_multipliers(1000, 3, 0, 1);
  const I64 primes{1009, 1013, 1019, 1021};
  I64 rows(12);
  const I64 negative{5, -1, 3};
  EXPECT_THROW(engram_hash_rows(negative.data(), 1, 3, 0, mult.data(), 3, primes.data(), 2, rows.data()), Error);
  const I64 huge{5, INT64_MAX / 1000, 3};  // id * m would overflow
  EXPECT_THROW(engram_hash_rows(huge.data(), 1, 3, 0, mult.data(), 3, primes.data(), 2, rows.data()), Error);
  const I64 ok{5, 6, 7};
  EXPECT_THROW(engram_hash_rows(ok.data(), 1, 3, -2, mult.data(), 3, primes.data(), 2, rows.data()), Error);
  const I64 bad_primes{1009, 0, 1019, 1021};
  EXPECT_THROW(engram_hash_rows(ok.data(), 1, 3, 0, mult.data(), 3, bad_primes.data(), 2, rows.data()), Error);
}

struct GatherCase {
  int64_t table_rows = 13, width = 5, n_tokens = 40, per_token = 3;
  std::vector<float> table;
  I64 rows;
  explicit GatherCase(uint64_t seed) {
    std::mt19937_64 gen(seed);
    std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
    table.resize(static_cast<size_t>(table_rows * width));
    for (float& v : table) v = uni(gen);
    // Rows 0..9 only, so rows 10..12 are never read and many rows repeat.
    rows.resize(static_cast<size_t>(n_tokens * per_token));
    for (int64_t& r : rows) r = static_cast<int64_t>(gen() % 10);
  }
};

TEST(EngramHash, GatherCopiesTheAddressedRows) {
  GatherCase c(1);
  std::vector<float> out(static_cast<size_t>(c.n_tokens * c.per_token * c.width), -9.0f);
  engram_gather(c.table.data(), c.width, c.rows.data(), c.n_tokens, c.per_token, out.data());
  for (int64_t t = 0; t < c.n_tokens; ++t)
    for (int64_t j = 0; j < c.per_token; ++j)
      for (int64_t d = 0; d < c.width; ++d)
        ASSERT_EQ(out[static_cast<size_t>((t * c.per_token + j) * c.width + d)],
                  c.table[static_cast<size_t>(c.rows[static_cast<size_t>(t * c.per_token + j)] * c.width + d)]);
}

// Dense table gradient by naive loops, in (token, slot) order.
void dense_backward(const std::vector<float>& d_out, const GatherCase& c, std::vector<float>* dense) {
  for (int64_t s = 0; s < c.n_tokens * c.per_token; ++s)
    for (int64_t d = 0; d < c.width; ++d)
      (*dense)[static_cast<size_t>(c.rows[static_cast<size_t>(s)] * c.width + d)] +=
          d_out[static_cast<size_t>(s * c.width + d)];
}

void expect_matches_dense(const SparseRowGrad& sparse, const std::vector<float>& dense, const std::set<int64_t>& read,
                          int64_t width) {
  EXPECT_EQ(std::set<int64_t>(sparse.rows.begin(), sparse.rows.end()), read);  // untouched rows never appear
  EXPECT_TRUE(std::is_sorted(sparse.rows.begin(), sparse.rows.end()));
  ASSERT_EQ(sparse.rows.size(), read.size());  // unique
  ASSERT_EQ(sparse.grad.size(), sparse.rows.size() * static_cast<size_t>(width));
  for (size_t i = 0; i < sparse.rows.size(); ++i)
    for (int64_t d = 0; d < width; ++d)
      EXPECT_FLOAT_EQ(sparse.grad[i * static_cast<size_t>(width) + static_cast<size_t>(d)],
                      dense[static_cast<size_t>(sparse.rows[i] * width + d)]);
}

TEST(EngramHash, BackwardMatchesDenseGradientAndMerges) {
  GatherCase first(2), second(3);
  for (int64_t& r : second.rows) r += 2;  // overlaps rows 2..9, adds 10 and 11
  std::mt19937_64 gen(4);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  std::vector<float> d_out1(static_cast<size_t>(first.n_tokens * first.per_token * first.width));
  std::vector<float> d_out2(d_out1.size());
  for (float& v : d_out1) v = uni(gen);
  for (float& v : d_out2) v = uni(gen);

  std::vector<float> dense(static_cast<size_t>(first.table_rows * first.width), 0.0f);
  SparseRowGrad sparse;
  engram_gather_backward(d_out1.data(), first.rows.data(), first.n_tokens, first.per_token, first.width, &sparse);
  dense_backward(d_out1, first, &dense);
  std::set<int64_t> read(first.rows.begin(), first.rows.end());
  expect_matches_dense(sparse, dense, read, first.width);
  EXPECT_EQ(sparse.row_width, first.width);

  engram_gather_backward(d_out2.data(), second.rows.data(), second.n_tokens, second.per_token, second.width, &sparse);
  dense_backward(d_out2, second, &dense);
  read.insert(second.rows.begin(), second.rows.end());
  expect_matches_dense(sparse, dense, read, first.width);
  EXPECT_EQ(read.count(12), 0u);

  // Adding into rows that are all present already (the in-place path).
  engram_gather_backward(d_out1.data(), first.rows.data(), first.n_tokens, first.per_token, first.width, &sparse);
  dense_backward(d_out1, first, &dense);
  expect_matches_dense(sparse, dense, read, first.width);
}

TEST(EngramHash, BackwardRejectsMismatchedAccumulator) {
  GatherCase c(5);
  std::vector<float> d_out(static_cast<size_t>(c.n_tokens * c.per_token * c.width), 1.0f);
  SparseRowGrad sparse;
  engram_gather_backward(d_out.data(), c.rows.data(), c.n_tokens, c.per_token, c.width, &sparse);
  EXPECT_THROW(engram_gather_backward(d_out.data(), c.rows.data(), 1, 1, c.width + 1, &sparse), Error);
  sparse.grad.pop_back();
  EXPECT_THROW(engram_gather_backward(d_out.data(), c.rows.data(), 1, 1, c.width, &sparse), Error);
  SparseRowGrad fresh;
  const I64 negative{-1};
  EXPECT_THROW(engram_gather_backward(d_out.data(), negative.data(), 1, 1, c.width, &fresh), Error);
}

}  // namespace
}  // namespace memoe
