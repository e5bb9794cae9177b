#include "kernels/rope.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numbers>
#include <vector>

#include "core/error.h"
#include "grad_check.h"
#include "io/config.h"
#include "model/rope.h"

namespace memoe {
namespace {

using memoe::testing::expect_gradient_matches;
using memoe::testing::random_vector;
using memoe::testing::weighted_sum;

// Unscaled f_i = theta^(-2i/r), written out independently of model/rope.cc.
std::vector<double> plain_freqs(double theta, int64_t r) {
  std::vector<double> f;
  for (int64_t i = 0; i < r / 2; ++i) f.push_back(1.0 / std::pow(theta, double(2 * i) / double(r)));
  return f;
}

// Layout used by most tests: [batch, seq, heads, stride], rotating the slice
// [offset, offset + 2*freqs) of each head, with untouched columns on both sides.
struct Layout {
  int64_t batch = 2, seq = 5, heads = 3, stride = 11, offset = 3;
  int64_t numel() const { return batch * seq * heads * stride; }
};

TEST(Rope, RotatesInterleavedPairsByPositionTimesFrequency) {
  const Layout s;
  const std::vector<double> f{1.0, 0.37, 0.05, 0.001};  // rotary width 8
  const RopeTable table = make_rope_table(f, s.seq);
  ASSERT_EQ(table.dim, 8);
  std::vector<float> x = random_vector(s.numel(), 1), y = x;
  rope_apply(y.data(), s.batch, s.seq, s.heads, s.stride, s.offset, table, false);
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t t = 0; t < s.seq; ++t)
      for (int64_t h = 0; h < s.heads; ++h) {
        const int64_t base = ((b * s.seq + t) * s.heads + h) * s.stride;
        for (int64_t j = 0; j < s.stride; ++j) {
          const int64_t k = j - s.offset;
          if (k < 0 || k >= table.dim) {
            EXPECT_EQ(y[base + j], x[base + j]) << "column " << j << " is outside the rotary slice";
            continue;
          }
          const int64_t i = k / 2;
          const double angle = double(t) * f[size_t(i)];
          const double x0 = x[base + s.offset + 2 * i], x1 = x[base + s.offset + 2 * i + 1];
          const double want = (k % 2 == 0) ? x0 * std::cos(angle) - x1 * std::sin(angle)
                                           : x0 * std::sin(angle) + x1 * std::cos(angle);
          EXPECT_NEAR(y[base + j], want, 1e-5) << "b " << b << " t " << t << " h " << h << " pair " << i;
        }
      }
}

TEST(Rope, TableHoldsCosAndSinOfFloat64Angles) {
  // Large positions: float32 angles would be off by ~1e-3 here (spec §3).
  const std::vector<double> f = plain_freqs(10000.0, 16);
  const int64_t L = 40000;
  const RopeTable table = make_rope_table(f, L);
  ASSERT_EQ(table.cos.size(), size_t(L) * f.size());
  for (int64_t t : {int64_t{0}, int64_t{1}, int64_t{777}, L - 1})
    for (size_t i = 0; i < f.size(); ++i) {
      const double angle = double(t) * f[i];
      EXPECT_NEAR(table.cos[size_t(t) * f.size() + i], std::cos(angle), 2e-7) << t << " " << i;
      EXPECT_NEAR(table.sin[size_t(t) * f.size() + i], std::sin(angle), 2e-7) << t << " " << i;
    }
}

TEST(Rope, RotationPreservesEachPairsNorm) {
  const Layout s;
  const RopeTable table = make_rope_table(plain_freqs(10000.0, 8), s.seq);
  std::vector<float> x = random_vector(s.numel(), 2), y = x;
  rope_apply(y.data(), s.batch, s.seq, s.heads, s.stride, s.offset, table, false);
  bool any_moved = false;
  for (int64_t row = 0; row < s.batch * s.seq * s.heads; ++row)
    for (int64_t i = 0; i < table.dim / 2; ++i) {
      const int64_t j = row * s.stride + s.offset + 2 * i;
      const double before = std::hypot(double(x[j]), double(x[j + 1]));
      const double after = std::hypot(double(y[j]), double(y[j + 1]));
      EXPECT_NEAR(after, before, 1e-6 * (1.0 + before));
      any_moved |= std::fabs(y[j] - x[j]) > 1e-3f;
    }
  EXPECT_TRUE(any_moved);
}

TEST(Rope, InverseUndoesTheRotation) {
  const Layout s;
  const RopeTable table = make_rope_table(plain_freqs(500.0, 8), s.seq);
  const std::vector<float> x = random_vector(s.numel(), 3);
  std::vector<float> y = x;
  rope_apply(y.data(), s.batch, s.seq, s.heads, s.stride, s.offset, table, false);
  rope_apply(y.data(), s.batch, s.seq, s.heads, s.stride, s.offset, table, true);
  for (int64_t i = 0; i < s.numel(); ++i) EXPECT_NEAR(y[i], x[i], 1e-6f * (1.0f + std::fabs(x[i])));
}

// d sum(R * rope(x)) / dx = rope^-1(R): the inverse rotation is the backward.
TEST(Rope, InverseRotationIsTheBackward) {
  const Layout s;
  const RopeTable table = make_rope_table(plain_freqs(100.0, 8), s.seq);
  std::vector<float> x = random_vector(s.numel(), 4), r = random_vector(s.numel(), 5), y;
  auto loss = [&] {
    y = x;
    rope_apply(y.data(), s.batch, s.seq, s.heads, s.stride, s.offset, table, false);
    return weighted_sum(y.data(), r.data(), s.numel());
  };
  std::vector<float> dx = r;
  rope_apply(dx.data(), s.batch, s.seq, s.heads, s.stride, s.offset, table, true);
  expect_gradient_matches("dx", x.data(), s.numel(), dx.data(), loss, 60);
}

TEST(Rope, RejectsSequenceLongerThanTable) {
  const RopeTable table = make_rope_table({1.0}, 4);
  std::vector<float> x(2 * 5, 1.0f);
  EXPECT_THROW(rope_apply(x.data(), 1, 5, 1, 2, 0, table, false), Error);
}

// ---- rope_frequencies (model/rope.h) against spec §3 written out here. ----

ModelConfig mla_config(int64_t rope_dim, double theta) {
  ModelConfig c;
  c.hidden_size = 16;
  c.num_hidden_layers = 1;
  c.num_attention_heads = 2;
  c.q_lora_rank = 0;
  c.kv_lora_rank = 8;
  c.qk_nope_head_dim = 4;
  c.qk_rope_head_dim = rope_dim;
  c.v_head_dim = 4;
  c.rope_theta = theta;
  return c;
}

std::vector<double> spec_yarn_freqs(double theta, int64_t r, const YarnConfig& y) {
  std::vector<double> f = plain_freqs(theta, r);
  auto dim_of = [&](double beta) {
    return double(r) * std::log(double(y.original_max_position_embeddings) / (2.0 * std::numbers::pi * beta)) /
           (2.0 * std::log(theta));
  };
  double low = std::floor(dim_of(y.beta_fast));
  if (low < 0) low = 0;
  double high = std::ceil(dim_of(y.beta_slow));
  if (high > double(r - 1)) high = double(r - 1);
  if (low == high) high += 0.001;
  for (int64_t i = 0; i < r / 2; ++i) {
    double ramp = (double(i) - low) / (high - low);
    ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
    const double smooth = 1.0 - ramp;
    f[size_t(i)] = f[size_t(i)] / y.factor * (1.0 - smooth) + f[size_t(i)] * smooth;
  }
  return f;
}

void expect_freqs_equal(const std::vector<double>& got, const std::vector<double>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-12 * want[i]) << "pair " << i;
}

TEST(Rope, FrequenciesWithoutScalingAreThetaPowers) {
  ModelConfig c = mla_config(64, 10000.0);
  validate_config(c);
  expect_freqs_equal(rope_frequencies(c), plain_freqs(10000.0, 64));
  // factor 1 keeps YaRN off even when rope_scaling is present.
  c.rope_scaling = YarnConfig{};
  validate_config(c);
  expect_freqs_equal(rope_frequencies(c), plain_freqs(10000.0, 64));
  // GQA rotates the whole head_dim.
  ModelConfig g = mla_config(64, 10000.0);
  g.attention = AttentionKind::GQA;
  g.num_key_value_heads = 1;
  g.head_dim = 12;
  validate_config(g);
  expect_freqs_equal(rope_frequencies(g), plain_freqs(10000.0, 12));
}

TEST(Rope, YarnFrequenciesMatchSpec) {
  ModelConfig c = mla_config(64, 10000.0);
  YarnConfig y;
  y.factor = 40.0;
  y.original_max_position_embeddings = 4096;
  y.beta_fast = 32.0;
  y.beta_slow = 1.0;
  y.mscale_all_dim = 1.0;
  c.rope_scaling = y;
  validate_config(c);
  const std::vector<double> want = spec_yarn_freqs(10000.0, 64, y);
  expect_freqs_equal(rope_frequencies(c), want);
  // The config spans all three regimes: kept, blended, divided by the factor.
  const std::vector<double> base = plain_freqs(10000.0, 64);
  EXPECT_DOUBLE_EQ(want[0], base[0]);
  EXPECT_NEAR(want[31], base[31] / 40.0, 1e-15);
  EXPECT_GT(want[15], base[15] / 40.0 * 1.01);
  EXPECT_LT(want[15], base[15] * 0.99);
  // softmax scale picks up mscale^2.
  const double mscale = 0.1 * std::log(40.0) + 1.0;
  EXPECT_NEAR(c.softmax_scale(), mscale * mscale / std::sqrt(68.0), 1e-12);
}

TEST(Rope, YarnWhenLowEqualsHigh) {
  // beta values so large that both correction dims are negative: low = high = 0,
  // so the spec's +0.001 decides that pair 0 keeps its frequency and every
  // other pair is divided by the factor.
  ModelConfig c = mla_config(16, 10000.0);
  YarnConfig y;
  y.factor = 8.0;
  y.original_max_position_embeddings = 4096;
  y.beta_fast = 4000.0;
  y.beta_slow = 2000.0;
  c.rope_scaling = y;
  validate_config(c);
  const std::vector<double> got = rope_frequencies(c), base = plain_freqs(10000.0, 16);
  expect_freqs_equal(got, spec_yarn_freqs(10000.0, 16, y));
  for (double v : got) EXPECT_TRUE(std::isfinite(v));
  EXPECT_DOUBLE_EQ(got[0], base[0]);
  for (size_t i = 1; i < got.size(); ++i) EXPECT_NEAR(got[i], base[i] / 8.0, 1e-15) << "pair " << i;
}

}  // namespace
}  // namespace memoe
