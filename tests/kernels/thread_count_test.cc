// Kernels give bitwise the same results on 1, 2 and 3 threads, so a run (or a
// resume on a machine with another core count) does not depend on the thread
// count. Sizes sit above each kernel's parallel threshold so the threaded
// paths are the ones compared.
#include <gtest/gtest.h>

#include <vector>

#include "grad_check.h"
#include "kernels/attention.h"
#include "kernels/cross_entropy.h"
#include "kernels/embedding.h"
#include "kernels/engram_hash.h"
#include "kernels/linear.h"
#include "kernels/moe_dispatch.h"
#include "kernels/norm.h"
#include "kernels/reduce.h"
#include "kernels/short_conv.h"
#include "thread_counts.h"

namespace memoe {
namespace {

using memoe::testing::expect_same_bits_for_thread_counts;
using memoe::testing::expect_same_double_for_thread_counts;
using memoe::testing::random_vector;

TEST(ThreadCount, RmsNormBackwardIsBitwiseTheSame) {
  const int64_t n = 3001, d = 96;  // n*d well above the threshold; n not a multiple of any chunk
  const std::vector<float> x = random_vector(n * d, 1), g = random_vector(d, 2), dy = random_vector(n * d, 3);
  std::vector<float> y(size_t(n * d)), rstd(static_cast<size_t>(n));
  rmsnorm_forward(x.data(), g.data(), 1e-6f, n, d, y.data(), rstd.data());
  expect_same_bits_for_thread_counts("rmsnorm dx and dg", [&] {
    std::vector<float> out(size_t(n * d + d), 0.0f);  // dx then dg
    rmsnorm_backward(dy.data(), x.data(), g.data(), rstd.data(), n, d, out.data(), out.data() + n * d);
    return out;
  });
}

TEST(ThreadCount, ShortConvBackwardIsBitwiseTheSame) {
  const int64_t B = 5, L = 301, C = 64, K = 4, dil = 3;
  const std::vector<float> x = random_vector(B * L * C, 4), w = random_vector(C * K, 5),
                           dz = random_vector(B * L * C, 6);
  expect_same_bits_for_thread_counts("short conv dx and dw", [&] {
    std::vector<float> out(size_t(B * L * C + C * K), 0.0f);  // dx then dw
    short_conv_backward(dz.data(), x.data(), w.data(), B, L, C, K, dil, out.data(), out.data() + B * L * C);
    return out;
  });
}

TEST(ThreadCount, CrossEntropyIsBitwiseTheSame) {
  const int64_t n = 2049, V = 300;
  const std::vector<float> logits = random_vector(n * V, 7, 3.0f);
  std::vector<int64_t> targets(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) targets[size_t(i)] = i % 7 == 3 ? -1 : (i * 37) % V;
  expect_same_double_for_thread_counts("cross-entropy loss", [&] {
    std::vector<float> dlogits(size_t(n * V));
    return cross_entropy(logits.data(), targets.data(), n, V, dlogits.data());
  });
  expect_same_double_for_thread_counts("cross-entropy loss without gradient",
                                       [&] { return cross_entropy(logits.data(), targets.data(), n, V, nullptr); });
}

TEST(ThreadCount, SumOfSquaresIsBitwiseTheSame) {
  const int64_t n = 1000003;  // many chunks, the last one ragged
  const std::vector<float> x = random_vector(n, 22, 5.0f);
  expect_same_double_for_thread_counts("sum of squares", [&] { return sum_squares(x.data(), n); });
  double plain = 0.0;
  for (float v : x) plain += double(v) * double(v);
  EXPECT_NEAR(sum_squares(x.data(), n), plain, 1e-12 * plain);
  EXPECT_EQ(sum_squares(x.data(), 0), 0.0);
  EXPECT_EQ(sum_squares(x.data(), 1), double(x[0]) * double(x[0]));
}

TEST(ThreadCount, SequenceBalanceLossIsBitwiseTheSame) {
  RouterSpec spec;
  spec.n_experts = 16;
  spec.top_k = 2;
  const int64_t B = 37, L = 65, n = B * L;
  std::vector<float> logits = random_vector(n * spec.n_experts, 8), s(size_t(n * spec.n_experts));
  router_scores(spec, logits.data(), n, s.data());
  std::vector<int32_t> idx(size_t(n * spec.top_k));
  std::vector<float> w(idx.size());
  route_top_k(spec, s.data(), nullptr, n, idx.data(), w.data());
  expect_same_double_for_thread_counts("sequence balance loss",
                                       [&] { return seq_balance_loss(spec, s.data(), idx.data(), B, L, 0.01); });
  expect_same_bits_for_thread_counts("sequence balance loss gradient", [&] {
    std::vector<float> ds(s.size(), 0.0f);
    seq_balance_loss_backward(spec, s.data(), idx.data(), B, L, 0.01, ds.data());
    return ds;
  });
}

// OpenBLAS splits products over M and N, not K, so each output element sums
// the same terms in the same order whatever the thread count. The shapes are
// those of the engine's linear layers (forward, dx and dW products), the
// lm head, depths OpenBLAS cuts differently when threaded (385..767, 1000),
// and single rows / columns where a BLAS may take a gemv path. cblas_sgemv
// itself is not thread-count invariant in OpenBLAS 0.3.21 (both
// orientations differ, even between 2 and 3 threads), which is why the
// engine never calls it: every product goes through gemm().
TEST(ThreadCount, BlasProductsAreBitwiseTheSame) {
  struct Shape {
    int64_t n, in, out;
  };
  const Shape shapes[] = {{2048, 256, 768}, {1024, 256, 8192}, {1024, 64, 16}, {1, 256, 8192},
                          {4096, 256, 1},   {333, 129, 515},   {1000, 385, 64}, {64, 1000, 700}};
  for (const Shape& s : shapes) {
    const std::vector<float> x = random_vector(s.n * s.in, 9), w = random_vector(s.out * s.in, 10),
                             dy = random_vector(s.n * s.out, 11);
    const std::string name = std::to_string(s.n) + "x" + std::to_string(s.in) + "->" + std::to_string(s.out);
    expect_same_bits_for_thread_counts("linear forward " + name, [&] {
      std::vector<float> y(size_t(s.n * s.out));
      linear_forward(x.data(), w.data(), nullptr, s.n, s.in, s.out, y.data());
      return y;
    });
    expect_same_bits_for_thread_counts("linear backward " + name, [&] {
      std::vector<float> grads(size_t(s.n * s.in + s.out * s.in), 0.0f);  // dx then dW
      linear_backward(dy.data(), x.data(), w.data(), s.n, s.in, s.out, grads.data(), grads.data() + s.n * s.in,
                      nullptr);
      return grads;
    });
  }
}

TEST(ThreadCount, AttentionBackwardIsBitwiseTheSame) {
  AttentionShape s;
  s.batch = 2;
  s.seq_len = 200;  // several query and key blocks, the last one ragged
  s.n_heads = 4;
  s.n_kv_heads = 2;
  s.qk_dim = 24;
  s.v_dim = 16;
  s.scale = 0.2f;
  const int64_t nq = s.batch * s.seq_len * s.n_heads, nk = s.batch * s.seq_len * s.n_kv_heads;
  const std::vector<float> q = random_vector(nq * s.qk_dim, 14), k = random_vector(nk * s.qk_dim, 15),
                           v = random_vector(nk * s.v_dim, 16), dout = random_vector(nq * s.v_dim, 17);
  expect_same_bits_for_thread_counts("attention forward and backward", [&] {
    std::vector<float> out(size_t(nq * s.v_dim)), lse(static_cast<size_t>(nq));
    attention_forward(s, q.data(), k.data(), v.data(), out.data(), lse.data());
    std::vector<float> dq(q.size(), 0.0f), dk(k.size(), 0.0f), dv(v.size(), 0.0f);
    attention_backward(s, q.data(), k.data(), v.data(), out.data(), lse.data(), dout.data(), dq.data(), dk.data(),
                       dv.data());
    std::vector<float> all = out;
    for (const std::vector<float>* t : {&lse, &dq, &dk, &dv}) all.insert(all.end(), t->begin(), t->end());
    return all;
  });
}

TEST(ThreadCount, EngramGatherBackwardIsBitwiseTheSame) {
  const int64_t n = 4000, per_token = 4, width = 32;
  std::vector<int64_t> rows(size_t(n * per_token));
  for (size_t i = 0; i < rows.size(); ++i) rows[i] = int64_t((i * 7919) % 501);  // many duplicate rows
  const std::vector<float> d_out = random_vector(n * per_token * width, 18);
  expect_same_bits_for_thread_counts("engram sparse row gradient", [&] {
    SparseRowGrad g;
    engram_gather_backward(d_out.data(), rows.data(), n, per_token, width, &g);
    engram_gather_backward(d_out.data(), rows.data(), n / 2, per_token, width, &g);  // merge into present rows
    return g.grad;
  });
}

// Threads split the columns; each value still sums its tokens in order, so
// the result equals the plain loop bit for bit.
TEST(ThreadCount, EmbeddingBackwardSumsDuplicateIdsInTokenOrder) {
  const int64_t n = 3000, d = 100, V = 50;  // d not a multiple of the column block
  std::vector<int64_t> ids(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) ids[size_t(i)] = (i * 13) % V;
  const std::vector<float> dout = random_vector(n * d, 23), start = random_vector(V * d, 24);
  std::vector<float> plain = start;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < d; ++j) plain[size_t(ids[size_t(i)] * d + j)] += dout[size_t(i * d + j)];
  expect_same_bits_for_thread_counts("embedding gradient", [&] {
    std::vector<float> g = start;
    embedding_backward(dout.data(), ids.data(), n, d, g.data());
    EXPECT_EQ(g, plain);
    return g;
  });
}

TEST(ThreadCount, MoEDispatchAndCombineAreBitwiseTheSame) {
  RouterSpec spec;
  spec.n_experts = 8;
  spec.top_k = 2;
  spec.n_group = 4;
  spec.topk_group = 2;
  const int64_t n = 1500, d = 48, k = spec.top_k;
  const std::vector<float> logits = random_vector(n * spec.n_experts, 19), x = random_vector(n * d, 20),
                           dw = random_vector(n * k, 21);
  expect_same_bits_for_thread_counts("router, dispatch and combine", [&] {
    std::vector<float> s(size_t(n * spec.n_experts)), w(size_t(n * k));
    std::vector<int32_t> idx(size_t(n * k));
    router_scores(spec, logits.data(), n, s.data());
    route_top_k(spec, s.data(), nullptr, n, idx.data(), w.data());
    ExpertGroups groups;
    group_by_expert(idx.data(), n, int(k), spec.n_experts, groups);
    std::vector<float> grouped(size_t(n * k * d)), y(size_t(n * d), 0.0f), ds(s.size(), 0.0f),
        dlogits(s.size(), 0.0f);
    gather_rows(x.data(), d, groups.pairs.data(), n * k, int(k), grouped.data());
    combine_rows(grouped.data(), groups.position.data(), w.data(), n, int(k), d, y.data());
    route_weights_backward(spec, s.data(), idx.data(), dw.data(), n, ds.data());
    router_scores_backward(spec, s.data(), ds.data(), n, dlogits.data());
    for (const std::vector<float>* t : {&w, &ds, &dlogits}) y.insert(y.end(), t->begin(), t->end());
    return y;
  });
}

}  // namespace
}  // namespace memoe
