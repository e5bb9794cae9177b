#include "kernels/attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "core/error.h"
#include "kernels/attention_tiles.h"

namespace memoe {
namespace {

using Vec = std::vector<float>;
using VecD = std::vector<double>;

struct Inputs {
  Vec q, k, v;
};

size_t q_size(const AttentionShape& s) { return s.batch * s.seq_len * s.n_heads * s.qk_dim; }
size_t k_size(const AttentionShape& s) { return s.batch * s.seq_len * s.n_kv_heads * s.qk_dim; }
size_t v_size(const AttentionShape& s) { return s.batch * s.seq_len * s.n_kv_heads * s.v_dim; }
size_t o_size(const AttentionShape& s) { return s.batch * s.seq_len * s.n_heads * s.v_dim; }
size_t lse_size(const AttentionShape& s) { return s.batch * s.n_heads * s.seq_len; }

Vec random_vec(size_t n, std::mt19937& rng, float amplitude = 1.0f) {
  std::uniform_real_distribution<float> dist(-amplitude, amplitude);
  Vec x(n);
  for (float& e : x) e = dist(rng);
  return x;
}

Inputs random_inputs(const AttentionShape& s, uint32_t seed, float amplitude = 1.0f) {
  std::mt19937 rng(seed);
  Inputs in;
  in.q = random_vec(q_size(s), rng, amplitude);
  in.k = random_vec(k_size(s), rng, amplitude);
  in.v = random_vec(v_size(s), rng, amplitude);
  return in;
}

// Naive O(L^2) attention in double precision, with its analytic gradient.
struct Reference {
  VecD out, lse, dq, dk, dv;
};

Reference naive_attention(const AttentionShape& s, const Inputs& in, const Vec* dout) {
  const int64_t L = s.seq_len, H = s.n_heads, KVH = s.n_kv_heads, Dk = s.qk_dim, Dv = s.v_dim;
  const int64_t group = H / KVH;
  Reference r;
  r.out.assign(o_size(s), 0.0);
  r.lse.assign(lse_size(s), 0.0);
  r.dq.assign(q_size(s), 0.0);
  r.dk.assign(k_size(s), 0.0);
  r.dv.assign(v_size(s), 0.0);
  auto qi = [&](int64_t b, int64_t t, int64_t h) { return ((b * L + t) * H + h) * Dk; };
  auto ki = [&](int64_t b, int64_t t, int64_t g) { return ((b * L + t) * KVH + g) * Dk; };
  auto vi = [&](int64_t b, int64_t t, int64_t g) { return ((b * L + t) * KVH + g) * Dv; };
  auto oi = [&](int64_t b, int64_t t, int64_t h) { return ((b * L + t) * H + h) * Dv; };
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < L; ++t) {
        const int64_t g = h / group;
        VecD p(t + 1);
        double mx = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j <= t; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < Dk; ++d) dot += double(in.q[qi(b, t, h) + d]) * in.k[ki(b, j, g) + d];
          p[j] = dot * s.scale;
          mx = std::max(mx, p[j]);
        }
        double sum = 0;
        for (double& e : p) sum += (e = std::exp(e - mx));
        for (double& e : p) e /= sum;
        r.lse[(b * H + h) * L + t] = mx + std::log(sum);
        for (int64_t j = 0; j <= t; ++j)
          for (int64_t d = 0; d < Dv; ++d) r.out[oi(b, t, h) + d] += p[j] * in.v[vi(b, j, g) + d];
        if (!dout) continue;
        double delta = 0;
        for (int64_t d = 0; d < Dv; ++d) delta += double((*dout)[oi(b, t, h) + d]) * r.out[oi(b, t, h) + d];
        for (int64_t j = 0; j <= t; ++j) {
          double dp = 0;
          for (int64_t d = 0; d < Dv; ++d) {
            dp += double((*dout)[oi(b, t, h) + d]) * in.v[vi(b, j, g) + d];
            r.dv[vi(b, j, g) + d] += p[j] * (*dout)[oi(b, t, h) + d];
          }
          const double ds = p[j] * (dp - delta) * s.scale;
          for (int64_t d = 0; d < Dk; ++d) {
            r.dq[qi(b, t, h) + d] += ds * in.k[ki(b, j, g) + d];
            r.dk[ki(b, j, g) + d] += ds * in.q[qi(b, t, h) + d];
          }
        }
      }
  return r;
}

// Largest |got - want| relative to max(1, max |want|).
double relative_error(const Vec& got, const VecD& want) {
  EXPECT_EQ(got.size(), want.size());
  double max_err = 0, max_ref = 1;
  for (size_t i = 0; i < got.size(); ++i) {
    max_err = std::max(max_err, std::abs(double(got[i]) - want[i]));
    max_ref = std::max(max_ref, std::abs(want[i]));
  }
  return max_err / max_ref;
}

struct Forward {
  Vec out, lse;
};

Forward run_forward(const AttentionShape& s, const Inputs& in) {
  Forward f{Vec(o_size(s), NAN), Vec(lse_size(s), NAN)};
  attention_forward(s, in.q.data(), in.k.data(), in.v.data(), f.out.data(), f.lse.data());
  return f;
}

AttentionShape make_shape(int64_t batch, int64_t len, int64_t heads, int64_t kv_heads, int64_t dk,
                          int64_t dv) {
  return {batch, len, heads, kv_heads, dk, dv, 1.0f / std::sqrt(float(dk))};
}

// Block size is 64: lengths below, at and across block edges; GQA groups of
// 1, 2 and 4; MLA dims; dims that are not a multiple of the vector width.
std::vector<AttentionShape> test_shapes() {
  return {make_shape(1, 1, 1, 1, 8, 8),       make_shape(2, 7, 4, 2, 16, 8),
          make_shape(1, 70, 4, 1, 64, 64),    make_shape(2, 130, 4, 2, 24, 40),
          make_shape(1, 130, 2, 2, 192, 128), make_shape(1, 128, 4, 4, 33, 17),
          make_shape(1, 64, 2, 1, 5, 3),      make_shape(1, 200, 8, 2, 64, 64)};
}

TEST(AttentionForward, MatchesNaiveReference) {
  uint32_t seed = 1;
  for (const AttentionShape& s : test_shapes()) {
    SCOPED_TRACE(::testing::Message() << "B=" << s.batch << " L=" << s.seq_len << " H=" << s.n_heads
                                      << " KVH=" << s.n_kv_heads << " Dqk=" << s.qk_dim << " Dv=" << s.v_dim);
    const Inputs in = random_inputs(s, seed++);
    const Forward f = run_forward(s, in);
    const Reference ref = naive_attention(s, in, nullptr);
    EXPECT_LT(relative_error(f.out, ref.out), 1e-5);
    EXPECT_LT(relative_error(f.lse, ref.lse), 1e-5);
  }
}

// Large logits make the running max change between key blocks, so the
// rescaling of the online softmax is exercised hard.
TEST(AttentionForward, SharpSoftmaxMatchesReference) {
  AttentionShape s = make_shape(1, 190, 2, 1, 32, 16);
  s.scale = 1.0f;
  const Inputs in = random_inputs(s, 7, 2.0f);  // logits up to ~+-40
  const Forward f = run_forward(s, in);
  const Reference ref = naive_attention(s, in, nullptr);
  EXPECT_LT(relative_error(f.out, ref.out), 1e-5);
  EXPECT_LT(relative_error(f.lse, ref.lse), 1e-5);
}

TEST(AttentionForward, LseOfSingleKeyIsItsScaledScore) {
  const AttentionShape s = make_shape(1, 3, 1, 1, 4, 2);
  const Inputs in = random_inputs(s, 3);
  const Forward f = run_forward(s, in);
  // Query 0 sees only key 0: lse = scale * q0.k0 and out = v0.
  float dot = 0;
  for (int d = 0; d < 4; ++d) dot += in.q[d] * in.k[d];
  EXPECT_NEAR(f.lse[0], s.scale * dot, 1e-6);
  EXPECT_NEAR(f.out[0], in.v[0], 1e-6);
  EXPECT_NEAR(f.out[1], in.v[1], 1e-6);
}

TEST(AttentionForward, IsCausal) {
  const AttentionShape s = make_shape(2, 130, 4, 2, 16, 12);
  const Inputs in = random_inputs(s, 11);
  const Forward base = run_forward(s, in);
  for (int64_t t : {0, 5, 63, 64, 70, 129}) {
    Inputs changed = in;
    for (int64_t b = 0; b < s.batch; ++b)
      for (int64_t g = 0; g < s.n_kv_heads; ++g) {
        for (int64_t d = 0; d < s.qk_dim; ++d)
          changed.k[((b * s.seq_len + t) * s.n_kv_heads + g) * s.qk_dim + d] += 0.5f;
        for (int64_t d = 0; d < s.v_dim; ++d)
          changed.v[((b * s.seq_len + t) * s.n_kv_heads + g) * s.v_dim + d] -= 0.5f;
      }
    const Forward f = run_forward(s, changed);
    const size_t row = s.n_heads * s.v_dim;  // out floats per (batch, position)
    for (int64_t b = 0; b < s.batch; ++b) {
      const size_t begin = b * s.seq_len * row;
      for (size_t i = begin; i < begin + t * row; ++i)
        ASSERT_EQ(f.out[i], base.out[i]) << "t=" << t << " i=" << i;
      bool row_t_changed = false;
      for (size_t i = begin + t * row; i < begin + (t + 1) * row; ++i)
        row_t_changed |= f.out[i] != base.out[i];
      EXPECT_TRUE(row_t_changed) << "t=" << t;
      for (int64_t h = 0; h < s.n_heads; ++h)
        for (int64_t p = 0; p < t; ++p) {
          const size_t li = (b * s.n_heads + h) * s.seq_len + p;
          ASSERT_EQ(f.lse[li], base.lse[li]);
        }
    }
  }
}

// A NaN key must poison every output that attends to it rather than be
// dropped from the softmax, so divergence stays visible.
TEST(AttentionForward, NanKeyPropagatesToLaterQueriesOnly) {
  const AttentionShape s = make_shape(1, 100, 2, 1, 8, 4);
  const int64_t t = 70;
  Inputs in = random_inputs(s, 13);
  in.k[t * s.qk_dim + 3] = std::numeric_limits<float>::quiet_NaN();
  const Forward f = run_forward(s, in);
  for (int64_t pos = 0; pos < s.seq_len; ++pos)
    for (int64_t h = 0; h < s.n_heads; ++h) {
      const float o = f.out[(pos * s.n_heads + h) * s.v_dim];
      const float l = f.lse[h * s.seq_len + pos];
      EXPECT_EQ(std::isnan(o), pos >= t) << "pos=" << pos;
      EXPECT_EQ(std::isnan(l), pos >= t) << "pos=" << pos;
    }
}

struct Grads {
  Vec dq, dk, dv;
};

Grads run_backward(const AttentionShape& s, const Inputs& in, const Forward& f, const Vec& dout,
                   float fill = 0) {
  Grads g{Vec(q_size(s), fill), Vec(k_size(s), fill), Vec(v_size(s), fill)};
  attention_backward(s, in.q.data(), in.k.data(), in.v.data(), f.out.data(), f.lse.data(), dout.data(),
                     g.dq.data(), g.dk.data(), g.dv.data());
  return g;
}

TEST(AttentionBackward, MatchesNaiveGradient) {
  uint32_t seed = 100;
  for (const AttentionShape& s : test_shapes()) {
    SCOPED_TRACE(::testing::Message() << "B=" << s.batch << " L=" << s.seq_len << " H=" << s.n_heads
                                      << " KVH=" << s.n_kv_heads << " Dqk=" << s.qk_dim << " Dv=" << s.v_dim);
    const Inputs in = random_inputs(s, seed++);
    std::mt19937 rng(seed++);
    const Vec dout = random_vec(o_size(s), rng);
    const Forward f = run_forward(s, in);
    const Grads g = run_backward(s, in, f, dout);
    const Reference ref = naive_attention(s, in, &dout);
    EXPECT_LT(relative_error(g.dq, ref.dq), 1e-5);
    EXPECT_LT(relative_error(g.dk, ref.dk), 1e-5);
    EXPECT_LT(relative_error(g.dv, ref.dv), 1e-5);
  }
}

TEST(AttentionBackward, AddsIntoExistingGradients) {
  const AttentionShape s = make_shape(1, 70, 2, 1, 8, 8);
  const Inputs in = random_inputs(s, 21);
  std::mt19937 rng(22);
  const Vec dout = random_vec(o_size(s), rng);
  const Forward f = run_forward(s, in);
  const Grads fresh = run_backward(s, in, f, dout, 0.0f);
  const Grads added = run_backward(s, in, f, dout, 3.0f);
  for (size_t i = 0; i < fresh.dq.size(); ++i) ASSERT_FLOAT_EQ(added.dq[i], fresh.dq[i] + 3.0f);
  for (size_t i = 0; i < fresh.dk.size(); ++i) ASSERT_FLOAT_EQ(added.dk[i], fresh.dk[i] + 3.0f);
  for (size_t i = 0; i < fresh.dv.size(); ++i) ASSERT_FLOAT_EQ(added.dv[i], fresh.dv[i] + 3.0f);
}

// Loss = sum(out * R): its gradient wrt out is R. Central differences of
// the kernel's own forward must agree with the kernel's backward.
TEST(AttentionBackward, MatchesFiniteDifferences) {
  for (const AttentionShape& s : {make_shape(1, 5, 2, 1, 3, 2), make_shape(1, 67, 2, 1, 4, 3)}) {
    SCOPED_TRACE(::testing::Message() << "L=" << s.seq_len);
    Inputs in = random_inputs(s, 31);
    std::mt19937 rng(32);
    const Vec weights = random_vec(o_size(s), rng);
    const Grads g = run_backward(s, in, run_forward(s, in), weights);
    auto loss = [&]() {
      const Forward f = run_forward(s, in);
      double sum = 0;
      for (size_t i = 0; i < f.out.size(); ++i) sum += double(f.out[i]) * weights[i];
      return sum;
    };
    const float eps = 1e-2f;
    auto check = [&](Vec& x, const Vec& grad, const char* name) {
      for (size_t i = 0; i < x.size(); ++i) {
        const float saved = x[i];
        x[i] = saved + eps;
        const double up = loss();
        x[i] = saved - eps;
        const double down = loss();
        x[i] = saved;
        const double numeric = (up - down) / (2.0 * double(eps));
        ASSERT_NEAR(grad[i], numeric, 2e-3 + 2e-3 * std::abs(numeric)) << name << "[" << i << "]";
      }
    };
    check(in.q, g.dq, "dq");
    check(in.k, g.dk, "dk");
    check(in.v, g.dv, "dv");
  }
}

// With dout zero from position t on, nothing at or after t can receive
// gradient through keys or values (they are only seen by later queries).
TEST(AttentionBackward, GradientsRespectCausality) {
  const AttentionShape s = make_shape(1, 130, 2, 1, 8, 8);
  const int64_t t = 80;
  const Inputs in = random_inputs(s, 41);
  std::mt19937 rng(42);
  Vec dout = random_vec(o_size(s), rng);
  std::fill(dout.begin() + t * s.n_heads * s.v_dim, dout.end(), 0.0f);
  const Grads g = run_backward(s, in, run_forward(s, in), dout);
  for (size_t i = t * s.n_kv_heads * s.qk_dim; i < g.dk.size(); ++i) ASSERT_EQ(g.dk[i], 0.0f);
  for (size_t i = t * s.n_kv_heads * s.v_dim; i < g.dv.size(); ++i) ASSERT_EQ(g.dv[i], 0.0f);
  EXPECT_NE(g.dv[(t - 1) * s.n_kv_heads * s.v_dim], 0.0f);
}

TEST(Attention, RejectsBadShapesAndPointers) {
  float x = 0;
  AttentionShape s = make_shape(1, 4, 3, 2, 4, 4);  // 3 heads cannot share 2 kv heads
  EXPECT_THROW(attention_forward(s, &x, &x, &x, &x, &x), Error);
  s = make_shape(1, 4, 2, 0, 4, 4);
  EXPECT_THROW(attention_forward(s, &x, &x, &x, &x, &x), Error);
  s = make_shape(1, -1, 2, 1, 4, 4);
  EXPECT_THROW(attention_forward(s, &x, &x, &x, &x, &x), Error);
  s = make_shape(1, 4, 2, 1, 0, 4);
  EXPECT_THROW(attention_backward(s, &x, &x, &x, &x, &x, &x, &x, &x, &x), Error);
  s = make_shape(1, 4, 2, 1, 4, 4);
  s.scale = std::numeric_limits<float>::infinity();
  EXPECT_THROW(attention_forward(s, &x, &x, &x, &x, &x), Error);
  s = make_shape(1, 4, 2, 1, 4, 4);
  EXPECT_THROW(attention_forward(s, nullptr, &x, &x, &x, &x), Error);
  EXPECT_THROW(attention_backward(s, &x, &x, &x, &x, &x, &x, &x, nullptr, &x), Error);
  s.seq_len = 0;  // empty input is a no-op, even with null pointers
  EXPECT_NO_THROW(attention_forward(s, nullptr, nullptr, nullptr, nullptr, nullptr));
}

TEST(AttentionTiles, ExpIsAccurateOverTheSoftmaxRange) {
  for (float x = -90.0f; x <= 0.0f; x += 0.01171875f) {
    const double want = x < -87.0f ? 0.0 : std::exp(double(x));
    ASSERT_NEAR(attention_tiles::exp_nonpositive(x), want, 3e-7 * want) << "x=" << x;
  }
  EXPECT_EQ(attention_tiles::exp_nonpositive(0.0f), 1.0f);
  EXPECT_EQ(attention_tiles::exp_nonpositive(1e-6f), 1.0f);  // rounding noise above 0 is clamped
  EXPECT_EQ(attention_tiles::exp_nonpositive(-std::numeric_limits<float>::infinity()), 0.0f);
  EXPECT_TRUE(std::isnan(attention_tiles::exp_nonpositive(std::numeric_limits<float>::quiet_NaN())));
}

// Every vector width (4, 8 and 16 lanes: GCC lowers the wider ones where
// the build lacks them) against a plain sum, and bit for bit against each
// other: a portable build's AVX-512 kernels give what its own do.
TEST(AttentionTiles, ProductMatchesNaiveForRaggedSizesAtEveryWidth) {
  std::mt19937 rng(51);
  for (int64_t m : {1, 3, 4, 9})
    for (int64_t n : {1, 7, 16, 65, 70})
      for (int64_t depth : {1, 5, 64}) {
        // A read transposed (row stride 1, column stride m) to cover that path too.
        const Vec a = random_vec(m * depth, rng), b = random_vec(depth * (n + 2), rng);
        const Vec c0 = random_vec(m * (n + 1), rng);
        Vec c4 = c0, c8 = c0, c16 = c0;
        attention_tiles::Tiles<4>::tile_product(m, n, depth, a.data(), 1, m, b.data(), n + 2, c4.data(), n + 1, true);
        attention_tiles::Tiles<8>::tile_product(m, n, depth, a.data(), 1, m, b.data(), n + 2, c8.data(), n + 1, true);
        attention_tiles::Tiles<16>::tile_product(m, n, depth, a.data(), 1, m, b.data(), n + 2, c16.data(), n + 1,
                                                 true);
        for (int64_t i = 0; i < m; ++i)
          for (int64_t j = 0; j <= n; ++j) {
            double want = c0[i * (n + 1) + j];
            if (j < n)
              for (int64_t k = 0; k < depth; ++k) want += double(a[k * m + i]) * b[k * (n + 2) + j];
            ASSERT_NEAR(c8[i * (n + 1) + j], want, 1e-5 * std::max(1.0, std::fabs(want))) << m << "x" << n << "x" << depth;
          }
        EXPECT_EQ(c4, c8) << m << "x" << n << "x" << depth;
        EXPECT_EQ(c16, c8) << m << "x" << n << "x" << depth;
      }
}

}  // namespace
}  // namespace memoe
