#include "model/engram.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "grad_check.h"
#include "model/init.h"

namespace memoe {
namespace {

using memoe::testing::expect_gradient_matches;
using memoe::testing::random_vector;
using memoe::testing::weighted_sum;

constexpr int64_t kBatch = 2, kSeq = 7;
constexpr int kLayer = 1;

// hc_mult 1; N = 3 (so the conv dilation is 3), K = 2 heads of width 4, a
// 3-tap conv. Small tables so that tokens share rows and the sparse gradient
// has to sum repeated reads.
ModelConfig engram_config() {
  ModelConfig c;
  c.vocab_size = 40;
  c.hidden_size = 8;
  c.num_hidden_layers = 2;
  c.first_k_dense_replace = 2;
  c.intermediate_size = 8;
  c.num_attention_heads = 2;
  c.q_lora_rank = 0;
  c.kv_lora_rank = 4;
  c.qk_nope_head_dim = 2;
  c.qk_rope_head_dim = 2;
  c.v_head_dim = 2;
  EngramConfig e;
  e.layer_ids = {kLayer};
  e.max_ngram_size = 3;
  e.table_sizes = {13, 11};
  e.n_embed_per_ngram = 8;
  e.n_head_per_ngram = 2;
  e.kernel_size = 3;
  e.pad_id = 0;
  c.engram = e;
  validate_config(c);
  return c;
}

struct EngramSetup {
  ModelConfig cfg = engram_config();
  EngramHash hash;
  EngramParams p;
  std::vector<float> h;
  std::vector<int64_t> ids;

  explicit EngramSetup(uint32_t seed) {
    hash = make_engram_hashes(cfg, {})[kLayer];
    p.allocate(cfg, hash.table_rows(), true);
    // Every dense tensor random (the conv too: a zero conv would hide its
    // gradient); norm gains near 1, matrices ~ N(0, 1/fan_in).
    p.visit("", [&](const std::string& name, Tensor& t) {
      const bool gain = name.find("norm") != std::string::npos;
      const bool matrix = name.find("proj.weight") != std::string::npos || name.find("projs") != std::string::npos;
      const float scale = gain ? 0.2f : matrix && t.ndim() == 2 ? float(1.0 / std::sqrt(double(t.dim(1)))) : 0.5f;
      const std::vector<float> v = random_vector(t.numel(), seed++, scale);
      for (int64_t i = 0; i < t.numel(); ++i) t[i] = v[size_t(i)] + (gain ? 1.0f : 0.0f);
    });
    h = random_vector(kBatch * kSeq * cfg.hidden_size, seed++);
    std::mt19937 gen(seed++);
    std::uniform_int_distribution<int64_t> pick(0, cfg.vocab_size - 1);
    for (int64_t i = 0; i < kBatch * kSeq; ++i) ids.push_back(pick(gen));
  }

  int64_t numel() const { return kBatch * kSeq * cfg.hidden_size; }

  std::vector<float> forward(EngramCache& cache) const { return forward(cache, h, ids); }
  std::vector<float> forward(EngramCache& cache, const std::vector<float>& hh, const std::vector<int64_t>& ii) const {
    std::vector<float> out(size_t(numel()), 0.0f);
    engram_forward(cfg, hash, p, hh.data(), ii.data(), kBatch, kSeq, cache, out.data());
    return out;
  }
};

TEST(EngramLayer, ConfigIsWhatTheTestsAssume) {
  EngramSetup s(1);
  EXPECT_EQ(s.hash.primes, (std::vector<int64_t>{13, 17, 11, 19}));
  EXPECT_EQ(s.hash.table_rows(), 60);
  EXPECT_EQ(s.p.conv_weight.shape(), (std::vector<int64_t>{8, 1, 3}));
}

TEST(EngramLayer, BackwardMatchesFiniteDifferences) {
  EngramSetup s(7);
  const std::vector<float> r = random_vector(s.numel(), 99);
  EngramCache cache;
  s.forward(cache);
  // The signed square root of the gate has a kink at 0; finite differences
  // need every score comfortably away from it.
  for (int64_t i = 0; i < kBatch * kSeq; ++i) ASSERT_GT(std::fabs(cache.gate_score[i]), 0.05f) << i;

  EngramParams grads;
  grads.allocate(s.cfg, s.hash.table_rows(), false);
  std::vector<float> dh(size_t(s.numel()), 0.0f);
  engram_backward(s.cfg, s.p, s.h.data(), cache, r.data(), kBatch, kSeq, grads, dh.data());

  auto loss = [&] {
    EngramCache c;
    const std::vector<float> out = s.forward(c);
    return weighted_sum(out.data(), r.data(), s.numel());
  };
  expect_gradient_matches("dh", s.h.data(), s.numel(), dh.data(), loss, 40);

  std::map<std::string, Tensor*> grad_of;
  grads.visit("", [&](const std::string& n, Tensor& t) { grad_of[n] = &t; });
  std::set<std::string> checked;
  s.p.visit("", [&](const std::string& n, Tensor& t) {
    if (n == "embedding.weight") return;  // sparse: checked below
    ASSERT_EQ(grad_of.count(n), 1u) << n;
    ASSERT_EQ(grad_of[n]->shape(), t.shape()) << n;
    expect_gradient_matches(n, t.data(), t.numel(), grad_of[n]->data(), loss, 24);
    checked.insert(n);
  });
  EXPECT_EQ(checked, (std::set<std::string>{"value_proj.weight", "value_proj.bias", "key_projs.0.weight",
                                            "key_projs.0.bias", "norm1.0.weight", "norm2.0.weight",
                                            "short_conv.conv.weight", "short_conv.norms.0.weight"}));

  // The table's gradient holds exactly the rows that were read, ascending.
  const SparseRowGrad& g = grads.embedding_grad;
  const std::set<int64_t> read(cache.rows.begin(), cache.rows.end());
  ASSERT_EQ(g.rows, std::vector<int64_t>(read.begin(), read.end()));
  ASSERT_LT(read.size(), cache.rows.size()) << "no row is read twice: the test would not cover summing";
  const int64_t D = s.cfg.engram->head_dim();
  ASSERT_EQ(g.row_width, D);
  ASSERT_EQ(g.grad.size(), g.rows.size() * size_t(D));
  // Perturb the rows that were read through a packed copy of them.
  std::vector<float> packed(g.grad.size());
  for (size_t k = 0; k < g.rows.size(); ++k)
    std::copy_n(s.p.embedding.data() + g.rows[k] * D, D, packed.data() + k * size_t(D));
  auto table_loss = [&] {
    for (size_t k = 0; k < g.rows.size(); ++k)
      std::copy_n(packed.data() + k * size_t(D), D, s.p.embedding.data() + g.rows[k] * D);
    return loss();
  };
  expect_gradient_matches("embedding rows", packed.data(), int64_t(packed.size()), g.grad.data(), table_loss, 60);
}

// A second backward merges into the same sparse rows and doubles every gradient.
TEST(EngramLayer, BackwardAddsIntoGradients) {
  EngramSetup s(7);
  const std::vector<float> dout = random_vector(s.numel(), 98);
  EngramCache cache;
  s.forward(cache);
  EngramParams once, twice;
  once.allocate(s.cfg, s.hash.table_rows(), false);
  twice.allocate(s.cfg, s.hash.table_rows(), false);
  std::vector<float> dh1(size_t(s.numel()), 0.0f), dh2(size_t(s.numel()), 0.0f);
  engram_backward(s.cfg, s.p, s.h.data(), cache, dout.data(), kBatch, kSeq, once, dh1.data());
  for (int rep = 0; rep < 2; ++rep)
    engram_backward(s.cfg, s.p, s.h.data(), cache, dout.data(), kBatch, kSeq, twice, dh2.data());
  for (size_t i = 0; i < dh1.size(); ++i) EXPECT_NEAR(dh2[i], 2.0f * dh1[i], 1e-5f * (1.0f + std::fabs(dh1[i])));
  std::map<std::string, Tensor*> once_of;
  once.visit("", [&](const std::string& n, Tensor& t) { once_of[n] = &t; });
  twice.visit("", [&](const std::string& n, Tensor& t) {
    for (int64_t i = 0; i < t.numel(); ++i)
      EXPECT_NEAR(t[i], 2.0f * (*once_of[n])[i], 1e-5f * (1.0f + std::fabs(t[i]))) << n << "[" << i << "]";
  });
  ASSERT_EQ(twice.embedding_grad.rows, once.embedding_grad.rows);
  for (size_t i = 0; i < once.embedding_grad.grad.size(); ++i)
    EXPECT_NEAR(twice.embedding_grad.grad[i], 2.0f * once.embedding_grad.grad[i], 1e-5f);
}

// The output at position t depends on ids and h at positions <= t only, and
// only within its own sequence.
TEST(EngramLayer, OutputDoesNotSeeTheFuture) {
  EngramSetup s(3);
  const int64_t d = s.cfg.hidden_size;
  EngramCache cache;
  const std::vector<float> base = s.forward(cache);
  for (int64_t t = 0; t < kSeq; ++t) {
    std::vector<float> h2 = s.h;
    std::vector<int64_t> ids2 = s.ids;
    for (int64_t u = t + 1; u < kSeq; ++u) {  // sequence 0, after t
      ids2[size_t(u)] = (ids2[size_t(u)] + 1 + u) % s.cfg.vocab_size;
      for (int64_t j = 0; j < d; ++j) h2[size_t(u * d + j)] += 0.7f;
    }
    const std::vector<float> out = s.forward(cache, h2, ids2);
    for (int64_t row = 0; row < kBatch * kSeq; ++row) {
      double diff = 0.0;
      for (int64_t j = 0; j < d; ++j)
        diff = std::max(diff, double(std::fabs(out[size_t(row * d + j)] - base[size_t(row * d + j)])));
      if (row <= t || row >= kSeq) {
        EXPECT_EQ(diff, 0.0) << "changing sequence 0 after " << t << " changed output row " << row;
      } else if (row == t + 1) {
        EXPECT_GT(diff, 1e-4) << "changing position " << row << " did not change its own output";
      }
    }
  }
}

// Spec §5.3-5.4 in double from the gathered rows: the gate, the value, the
// conv norm and a causal conv with dilation N = 3 over each sequence. (The
// scale-invariant conv norm hides a change of the gate alone, so the conv's
// wiring is checked here rather than by perturbing h.)
TEST(EngramLayer, ForwardMatchesSpecFormulas) {
  EngramSetup s(5);
  const EngramConfig& ec = *s.cfg.engram;
  const int64_t N = kBatch * kSeq, d = s.cfg.hidden_size, E = ec.embed_dim(), k = ec.kernel_size;
  const int64_t dil = ec.max_ngram_size;
  EngramCache cache;
  const std::vector<float> out = s.forward(cache);
  ASSERT_EQ(cache.e.shape(), (std::vector<int64_t>{N, E}));
  const EngramParams& p = s.p;
  // e(t) is the concatenation of the table rows the hash picked.
  const int64_t T = ec.tables_per_layer(), D = ec.head_dim();
  ASSERT_EQ(cache.rows.size(), size_t(N * T));
  for (int64_t i = 0; i < N; ++i)
    for (int64_t j = 0; j < T; ++j)
      for (int64_t x = 0; x < D; ++x)
        ASSERT_EQ(cache.e[i * E + j * D + x], p.embedding[cache.rows[size_t(i * T + j)] * D + x]);
  auto rms_norm = [&](const std::vector<double>& v, const Tensor& g, double eps) {
    double ms = 0.0;
    for (double x : v) ms += x * x;
    const double r = 1.0 / std::sqrt(ms / double(v.size()) + eps);
    std::vector<double> y(v.size());
    for (size_t j = 0; j < v.size(); ++j) y[j] = v[j] * r * g[int64_t(j)];
    return y;
  };
  auto project = [&](int64_t i, const Tensor& w, const Tensor& b) {
    std::vector<double> y(static_cast<size_t>(d));
    for (int64_t o = 0; o < d; ++o) {
      double acc = b[o];
      for (int64_t j = 0; j < E; ++j) acc += double(w[o * E + j]) * cache.e[i * E + j];
      y[size_t(o)] = acc;
    }
    return y;
  };
  const double gate_eps = 1.1920929e-07;
  std::vector<std::vector<double>> u(static_cast<size_t>(N)), n(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) {
    const std::vector<double> key = rms_norm(project(i, p.key_proj, p.key_bias), p.norm1, gate_eps);
    const std::vector<double> query =
        rms_norm(std::vector<double>(s.h.begin() + i * d, s.h.begin() + (i + 1) * d), p.norm2, gate_eps);
    double score = 0.0;
    for (int64_t j = 0; j < d; ++j) score += key[size_t(j)] * query[size_t(j)];
    score /= std::sqrt(double(d));
    const double root = (score > 0 ? 1.0 : score < 0 ? -1.0 : 0.0) * std::sqrt(std::max(std::fabs(score), 1e-6));
    const double alpha = 1.0 / (1.0 + std::exp(-root));
    EXPECT_NEAR(cache.alpha[i], alpha, 1e-5) << "token " << i;
    u[size_t(i)] = project(i, p.value_proj, p.value_bias);
    for (double& v : u[size_t(i)]) v *= alpha;
    n[size_t(i)] = rms_norm(u[size_t(i)], p.conv_norm, 1e-5);
  }
  for (int64_t b = 0; b < kBatch; ++b)
    for (int64_t t = 0; t < kSeq; ++t)
      for (int64_t c = 0; c < d; ++c) {
        double z = 0.0;
        for (int64_t tap = 0; tap < k; ++tap) {
          const int64_t src = t - (k - 1 - tap) * dil;
          if (src >= 0) z += double(p.conv_weight[c * k + tap]) * n[size_t(b * kSeq + src)][size_t(c)];
        }
        const int64_t i = b * kSeq + t;
        const double want = u[size_t(i)][size_t(c)] + z / (1.0 + std::exp(-z));
        EXPECT_NEAR(out[size_t(i * d + c)], want, 1e-4 * (1.0 + std::fabs(want)))
            << "b " << b << " t " << t << " c " << c;
      }
}

}  // namespace
}  // namespace memoe
