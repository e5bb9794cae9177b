#include "kernels/short_conv.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "grad_check.h"

namespace memoe {
namespace {

using memoe::testing::expect_gradient_matches;
using memoe::testing::random_vector;
using memoe::testing::weighted_sum;

struct ConvShape {
  int64_t batch, seq, channels, kernel, dilation;
  int64_t numel() const { return batch * seq * channels; }
  int64_t at(int64_t b, int64_t t, int64_t c) const { return (b * seq + t) * channels + c; }
};

// Distinct, nonzero taps so that a wrong tap index shows.
std::vector<float> distinct_weights(const ConvShape& s) {
  std::vector<float> w(size_t(s.channels * s.kernel));
  for (int64_t c = 0; c < s.channels; ++c)
    for (int64_t i = 0; i < s.kernel; ++i) w[size_t(c * s.kernel + i)] = float(1 + c * s.kernel + i) * 0.25f;
  return w;
}

// A unit impulse at (b, s, c) must reach exactly z[b, s + j*dilation, c] with
// weight w[c, kernel-1-j]: nothing earlier (no peeking at the future), nothing
// in other channels or other sequences, nothing at other offsets.
void expect_impulse_response(const ConvShape& s) {
  const std::vector<float> w = distinct_weights(s);
  std::vector<float> x(size_t(s.numel()), 0.0f), z(size_t(s.numel()));
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t src = 0; src < s.seq; ++src)
      for (int64_t c = 0; c < s.channels; ++c) {
        x[s.at(b, src, c)] = 1.0f;
        short_conv_forward(x.data(), w.data(), s.batch, s.seq, s.channels, s.kernel, s.dilation, z.data());
        x[s.at(b, src, c)] = 0.0f;
        for (int64_t bo = 0; bo < s.batch; ++bo)
          for (int64_t t = 0; t < s.seq; ++t)
            for (int64_t co = 0; co < s.channels; ++co) {
              float want = 0.0f;
              const int64_t lag = t - src;
              if (bo == b && co == c && lag >= 0 && lag % s.dilation == 0 && lag / s.dilation < s.kernel)
                want = w[size_t(c * s.kernel + (s.kernel - 1 - lag / s.dilation))];
              ASSERT_EQ(z[s.at(bo, t, co)], want) << "impulse at b " << b << " t " << src << " c " << c
                                                  << " -> output b " << bo << " t " << t << " c " << co;
            }
      }
}

TEST(ShortConv, ImpulseResponseIsCausalAndDilated) {
  expect_impulse_response({2, 12, 3, 4, 3});  // Engram: dilation = max_ngram_size
  expect_impulse_response({2, 7, 2, 3, 1});
  expect_impulse_response({1, 5, 2, 2, 4});   // taps that fall before t = 0
  expect_impulse_response({2, 4, 1, 1, 2});   // kernel 1: a per-channel scale
}

TEST(ShortConv, ForwardOverwritesOutput) {
  const ConvShape s{1, 6, 2, 3, 2};
  const std::vector<float> x = random_vector(s.numel(), 1), w = random_vector(s.channels * s.kernel, 2);
  std::vector<float> z1(size_t(s.numel()), 0.0f), z2(size_t(s.numel()), 99.0f);
  short_conv_forward(x.data(), w.data(), s.batch, s.seq, s.channels, s.kernel, s.dilation, z1.data());
  short_conv_forward(x.data(), w.data(), s.batch, s.seq, s.channels, s.kernel, s.dilation, z2.data());
  EXPECT_EQ(z1, z2);
}

void expect_backward_matches_fd(const ConvShape& s, uint32_t seed) {
  std::vector<float> x = random_vector(s.numel(), seed), w = random_vector(s.channels * s.kernel, seed + 1),
                     r = random_vector(s.numel(), seed + 2), z(size_t(s.numel()));
  auto loss = [&] {
    short_conv_forward(x.data(), w.data(), s.batch, s.seq, s.channels, s.kernel, s.dilation, z.data());
    return weighted_sum(z.data(), r.data(), s.numel());
  };
  std::vector<float> dx(size_t(s.numel()), 0.0f), dw(w.size(), 0.0f);
  short_conv_backward(r.data(), x.data(), w.data(), s.batch, s.seq, s.channels, s.kernel, s.dilation, dx.data(),
                      dw.data());
  expect_gradient_matches("dx", x.data(), s.numel(), dx.data(), loss, 48);
  expect_gradient_matches("dw", w.data(), int64_t(w.size()), dw.data(), loss, 48);
}

TEST(ShortConv, BackwardMatchesFiniteDifferences) {
  expect_backward_matches_fd({2, 10, 3, 4, 3}, 10);
  expect_backward_matches_fd({1, 6, 2, 3, 1}, 20);
}

// The gradient of a sequence's outputs never reaches another sequence's inputs.
TEST(ShortConv, BackwardKeepsSequencesApart) {
  const ConvShape s{2, 9, 2, 3, 2};
  const std::vector<float> x = random_vector(s.numel(), 3), w = random_vector(s.channels * s.kernel, 4);
  std::vector<float> dz(size_t(s.numel()), 0.0f), dx(size_t(s.numel()), 0.0f), dw(w.size(), 0.0f);
  for (int64_t t = 0; t < s.seq; ++t)
    for (int64_t c = 0; c < s.channels; ++c) dz[s.at(1, t, c)] = 1.0f;
  short_conv_backward(dz.data(), x.data(), w.data(), s.batch, s.seq, s.channels, s.kernel, s.dilation, dx.data(),
                      dw.data());
  for (int64_t t = 0; t < s.seq; ++t)
    for (int64_t c = 0; c < s.channels; ++c) {
      EXPECT_EQ(dx[s.at(0, t, c)], 0.0f) << "t " << t << " c " << c;
      EXPECT_NE(dx[s.at(1, t, c)], 0.0f) << "t " << t << " c " << c;
    }
}

// Above the kernel's parallel threshold dw is reduced over threads; compare
// with plain loops in double. Also checks that backward adds into dx and dw.
TEST(ShortConv, LargeBackwardMatchesPlainLoopsAndAccumulates) {
  const ConvShape s{2, 48, 800, 4, 3};
  const std::vector<float> x = random_vector(s.numel(), 5), w = random_vector(s.channels * s.kernel, 6),
                           dz = random_vector(s.numel(), 7);
  std::vector<float> dx(size_t(s.numel()), 1.0f), dw(w.size(), 1.0f);
  short_conv_backward(dz.data(), x.data(), w.data(), s.batch, s.seq, s.channels, s.kernel, s.dilation, dx.data(),
                      dw.data());
  std::vector<double> dx_ref(size_t(s.numel()), 1.0), dw_ref(w.size(), 1.0);
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t t = 0; t < s.seq; ++t)
      for (int64_t i = 0; i < s.kernel; ++i) {
        const int64_t src = t - (s.kernel - 1 - i) * s.dilation;
        if (src < 0) continue;
        for (int64_t c = 0; c < s.channels; ++c) {
          dx_ref[size_t(s.at(b, src, c))] += double(w[size_t(c * s.kernel + i)]) * dz[size_t(s.at(b, t, c))];
          dw_ref[size_t(c * s.kernel + i)] += double(dz[size_t(s.at(b, t, c))]) * x[size_t(s.at(b, src, c))];
        }
      }
  for (int64_t i = 0; i < s.numel(); ++i) ASSERT_NEAR(dx[size_t(i)], dx_ref[size_t(i)], 1e-4) << i;
  for (size_t j = 0; j < w.size(); ++j) ASSERT_NEAR(dw[j], dw_ref[j], 1e-3 + 1e-5 * std::fabs(dw_ref[j])) << j;
}

}  // namespace
}  // namespace memoe
