#include "model/swiglu.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "grad_check.h"

namespace memoe {
namespace {

using memoe::testing::expect_gradient_matches;
using memoe::testing::random_vector;
using memoe::testing::weighted_sum;

SwiGLUParams random_ffn(int64_t d, int64_t f, uint32_t seed) {
  SwiGLUParams p;
  p.allocate(d, f);
  p.visit("", [&](const std::string&, Tensor& t) {
    const std::vector<float> v = random_vector(t.numel(), seed++, 0.5f);
    std::copy(v.begin(), v.end(), t.data());
  });
  return p;
}

TEST(SwiGluFfn, ForwardMatchesFormula) {
  const int64_t n = 3, d = 5, f = 7;
  const SwiGLUParams p = random_ffn(d, f, 1);
  const std::vector<float> x = random_vector(n * d, 10);
  std::vector<float> y(size_t(n * d), 9.0f);
  SwiGLUCache cache;
  swiglu_ffn_forward(p, x.data(), n, cache, y.data());
  EXPECT_EQ(p.width(), f);
  for (int64_t i = 0; i < n; ++i) {
    std::vector<double> h(static_cast<size_t>(f));
    for (int64_t k = 0; k < f; ++k) {
      double a = 0.0, b = 0.0;
      for (int64_t j = 0; j < d; ++j) {
        a += double(p.gate_proj[k * d + j]) * x[size_t(i * d + j)];
        b += double(p.up_proj[k * d + j]) * x[size_t(i * d + j)];
      }
      h[size_t(k)] = a / (1.0 + std::exp(-a)) * b;
    }
    for (int64_t j = 0; j < d; ++j) {
      double want = 0.0;
      for (int64_t k = 0; k < f; ++k) want += double(p.down_proj[j * f + k]) * h[size_t(k)];
      EXPECT_NEAR(y[size_t(i * d + j)], want, 1e-5) << "row " << i << " column " << j;
    }
  }
}

TEST(SwiGluFfn, BackwardMatchesFiniteDifferences) {
  const int64_t n = 4, d = 6, f = 8;
  SwiGLUParams p = random_ffn(d, f, 2);
  std::vector<float> x = random_vector(n * d, 20), r = random_vector(n * d, 21), y(size_t(n * d));
  SwiGLUCache cache;
  auto loss = [&] {
    SwiGLUCache c;
    swiglu_ffn_forward(p, x.data(), n, c, y.data());
    return weighted_sum(y.data(), r.data(), n * d);
  };
  swiglu_ffn_forward(p, x.data(), n, cache, y.data());
  SwiGLUParams grads;
  grads.allocate(d, f);
  std::vector<float> dx(size_t(n * d), 0.0f);
  swiglu_ffn_backward(p, x.data(), cache, r.data(), n, grads, dx.data());

  expect_gradient_matches("dx", x.data(), n * d, dx.data(), loss, 24);
  expect_gradient_matches("gate_proj", p.gate_proj.data(), p.gate_proj.numel(), grads.gate_proj.data(), loss, 24);
  expect_gradient_matches("up_proj", p.up_proj.data(), p.up_proj.numel(), grads.up_proj.data(), loss, 24);
  expect_gradient_matches("down_proj", p.down_proj.data(), p.down_proj.numel(), grads.down_proj.data(), loss, 24);
}

TEST(SwiGluFfn, BackwardAddsIntoGradients) {
  const int64_t n = 2, d = 3, f = 4;
  const SwiGLUParams p = random_ffn(d, f, 3);
  const std::vector<float> x = random_vector(n * d, 30), dy = random_vector(n * d, 31);
  std::vector<float> y(size_t(n * d));
  SwiGLUCache cache;
  swiglu_ffn_forward(p, x.data(), n, cache, y.data());
  SwiGLUParams once, twice;
  once.allocate(d, f);
  twice.allocate(d, f);
  std::vector<float> dx1(size_t(n * d), 0.0f), dx2(size_t(n * d), 0.0f);
  swiglu_ffn_backward(p, x.data(), cache, dy.data(), n, once, dx1.data());
  swiglu_ffn_backward(p, x.data(), cache, dy.data(), n, twice, dx2.data());
  swiglu_ffn_backward(p, x.data(), cache, dy.data(), n, twice, dx2.data());
  for (size_t i = 0; i < dx1.size(); ++i) EXPECT_NEAR(dx2[i], 2.0f * dx1[i], 1e-5f);
  for (int64_t i = 0; i < once.gate_proj.numel(); ++i) {
    EXPECT_NEAR(twice.gate_proj[i], 2.0f * once.gate_proj[i], 1e-5f);
    EXPECT_NEAR(twice.up_proj[i], 2.0f * once.up_proj[i], 1e-5f);
    EXPECT_NEAR(twice.down_proj[i], 2.0f * once.down_proj[i], 1e-5f);
  }
}

}  // namespace
}  // namespace memoe
