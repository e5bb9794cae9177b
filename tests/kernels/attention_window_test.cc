// V4 sliding-window attention with a sink: against a plain double-precision
// transcription of DeepSeek's sparse_attn, against the causal kernel where
// they coincide, finite differences of every input, thread counts, and a
// ring of `window` keys decoding the full forward's bits.
#include "kernels/attention_window.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "grad_check.h"
#include "kernels/attention.h"
#include "thread_counts.h"

namespace memoe {
namespace {

using memoe::testing::expect_gradient_matches;
using memoe::testing::random_vector;
using memoe::testing::weighted_sum;

WindowAttentionShape shape(int64_t B, int64_t L, int64_t H, int64_t D, int64_t W) {
  WindowAttentionShape s;
  s.batch = B;
  s.seq_len = L;
  s.n_heads = H;
  s.dim = D;
  s.window = W;
  s.scale = float(1.0 / std::sqrt(double(D)));
  return s;
}

TEST(WindowAttention, ForwardMatchesDeepSeeksFormula) {
  const WindowAttentionShape s = shape(2, 9, 3, 5, 4);
  const int64_t L = s.seq_len, H = s.n_heads, D = s.dim;
  const std::vector<float> q = random_vector(2 * L * H * D, 1), kv = random_vector(2 * L * D, 2);
  const std::vector<float> sink = {0.5f, -1.0f, 2.0f};
  std::vector<float> out(q.size()), lse(size_t(2 * L * H));
  window_attention_forward(s, q.data(), kv.data(), sink.data(), out.data(), lse.data());
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t t = 0; t < L; ++t)
      for (int64_t h = 0; h < H; ++h) {
        const float* qh = q.data() + ((b * L + t) * H + h) * D;
        std::vector<double> o(size_t(D), 0.0);
        double denom = std::exp(double(sink[size_t(h)]));
        for (int64_t j = std::max<int64_t>(0, t - 3); j <= t; ++j) {
          const float* k = kv.data() + (b * L + j) * D;
          double sc = 0;
          for (int64_t c = 0; c < D; ++c) sc += double(qh[c]) * k[c];
          const double p = std::exp(sc * s.scale);
          denom += p;
          for (int64_t c = 0; c < D; ++c) o[size_t(c)] += p * k[c];
        }
        for (int64_t c = 0; c < D; ++c)
          EXPECT_NEAR(out[size_t(((b * L + t) * H + h) * D + c)], o[size_t(c)] / denom, 1e-5);
        EXPECT_NEAR(lse[size_t((b * L + t) * H + h)], std::log(denom), 1e-5);
      }
}

TEST(WindowAttention, WithoutSinkAndWindowItIsCausalAttentionWithKeyEqualValue) {
  const WindowAttentionShape s = shape(1, 12, 2, 8, 12);
  const std::vector<float> q = random_vector(12 * 2 * 8, 3), kv = random_vector(12 * 8, 4);
  const std::vector<float> sink(2, -1e30f);
  std::vector<float> out(q.size()), lse(24), want(q.size()), want_lse(24);
  window_attention_forward(s, q.data(), kv.data(), sink.data(), out.data(), lse.data());
  AttentionShape a;
  a.batch = 1, a.seq_len = 12, a.n_heads = 2, a.n_kv_heads = 1, a.qk_dim = 8, a.v_dim = 8, a.scale = s.scale;
  attention_forward(a, q.data(), kv.data(), kv.data(), want.data(), want_lse.data());
  for (size_t i = 0; i < out.size(); ++i) EXPECT_NEAR(out[i], want[i], 1e-5) << i;
}

struct Case {
  WindowAttentionShape s;
  std::vector<float> q, kv, sink, r;
  double loss() {
    std::vector<float> out(q.size()), lse(size_t(s.batch * s.seq_len * s.n_heads));
    window_attention_forward(s, q.data(), kv.data(), sink.data(), out.data(), lse.data());
    return weighted_sum(out.data(), r.data(), int64_t(out.size()));
  }
  void gradients(std::vector<float>& dq, std::vector<float>& dkv, std::vector<float>& dsink) {
    std::vector<float> out(q.size()), lse(size_t(s.batch * s.seq_len * s.n_heads));
    window_attention_forward(s, q.data(), kv.data(), sink.data(), out.data(), lse.data());
    dq.assign(q.size(), 0.0f);
    dkv.assign(kv.size(), 0.0f);
    dsink.assign(sink.size(), 0.0f);
    window_attention_backward(s, q.data(), kv.data(), sink.data(), out.data(), lse.data(), r.data(), dq.data(),
                              dkv.data(), dsink.data());
  }
};

Case random_case(int64_t B, int64_t L, int64_t H, int64_t D, int64_t W, uint32_t seed) {
  Case c;
  c.s = shape(B, L, H, D, W);
  c.q = random_vector(B * L * H * D, seed);
  c.kv = random_vector(B * L * D, seed + 1);
  c.sink = random_vector(H, seed + 2);
  c.r = random_vector(B * L * H * D, seed + 3);
  return c;
}

TEST(WindowAttention, BackwardMatchesFiniteDifferences) {
  for (int64_t W : {1, 3, 16}) {
    Case c = random_case(2, 7, 3, 4, W, 10);
    std::vector<float> dq, dkv, dsink;
    c.gradients(dq, dkv, dsink);
    auto loss = [&] { return c.loss(); };
    const std::string at = " (window " + std::to_string(W) + ")";
    expect_gradient_matches("dq" + at, c.q.data(), int64_t(c.q.size()), dq.data(), loss, 40, 1e-2f);
    expect_gradient_matches("dkv" + at, c.kv.data(), int64_t(c.kv.size()), dkv.data(), loss, 40, 1e-2f);
    expect_gradient_matches("dsink" + at, c.sink.data(), 3, dsink.data(), loss, 3, 1e-2f);
  }
}

TEST(WindowAttention, ThreadCountDoesNotChangeTheBits) {
  Case c = random_case(2, 160, 4, 32, 48, 20);
  std::vector<float> dq1, dkv1, ds1;
  memoe::testing::with_threads(1, [&] { c.gradients(dq1, dkv1, ds1); return 0; });
  for (int threads : memoe::testing::kThreadCounts) {
    std::vector<float> dq, dkv, ds;
    memoe::testing::with_threads(threads, [&] { c.gradients(dq, dkv, ds); return 0; });
    EXPECT_EQ(dq, dq1) << threads;
    EXPECT_EQ(dkv, dkv1) << threads;
    EXPECT_EQ(ds, ds1) << threads;
  }
}

TEST(WindowAttention, RingOfWindowKeysDecodesTheForwardsBits) {
  // Decode keeps only `window` keys (slot = position % window), whatever the
  // context: its rows must be the full forward's, bit for bit.
  const int64_t L = 40, H = 3, D = 8, W = 6;
  Case c = random_case(1, L, H, D, W, 30);
  std::vector<float> out(c.q.size()), lse(size_t(L * H));
  window_attention_forward(c.s, c.q.data(), c.kv.data(), c.sink.data(), out.data(), lse.data());
  std::vector<float> ring(size_t(W * D)), row(size_t(H * D));
  for (int64_t t = 0; t < L; ++t) {
    std::copy(c.kv.begin() + t * D, c.kv.begin() + (t + 1) * D, ring.begin() + (t % W) * D);
    window_attention_query(H, D, W, c.s.scale, c.q.data() + t * H * D, c.sink.data(), ring.data(), W, t, row.data(),
                           nullptr);
    EXPECT_EQ(std::memcmp(row.data(), out.data() + t * H * D, row.size() * sizeof(float)), 0) << "position " << t;
  }
}

}  // namespace
}  // namespace memoe
