// Finite-difference gradient checks shared by the layer tests.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace memoe::testing {

inline std::vector<float> random_vector(int64_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = dist(gen);
  return v;
}

// sum_i y_i * r_i in double: the scalar loss whose gradient w.r.t. y is r.
inline double weighted_sum(const float* y, const float* r, int64_t n) {
  double s = 0.0;
  for (int64_t i = 0; i < n; ++i) s += double(y[i]) * double(r[i]);
  return s;
}

struct GradCheckOptions {
  int samples = 24;
  float h = 1e-2f;
  double rtol = 2e-2;
  double atol = 2e-3;
  // Half of the samples are drawn among coordinates with a non-zero analytic
  // gradient (the other half uniformly), and some gradient must be non-zero.
  bool require_nonzero = true;
  // Called after each pair of perturbed evaluations; false means the
  // function was not smooth there (e.g. an MoE routing decision flipped), so
  // that coordinate is skipped. At least half must be usable.
  std::function<bool()> smooth_here;
};

// Compares analytic[i] with (loss(x_i + h) - loss(x_i - h)) / 2h at sampled
// coordinates of x (all of them when n <= samples). loss() must recompute
// everything from x's current contents. The tolerance is tight enough that a
// dropped term or a wrong sign fails.
inline void expect_gradient_matches(const std::string& what, float* x, int64_t n, const float* analytic,
                                    const std::function<double()>& loss, const GradCheckOptions& o) {
  std::mt19937 gen(1234);
  std::vector<int64_t> idx;
  if (n <= o.samples) {
    for (int64_t i = 0; i < n; ++i) idx.push_back(i);
  } else {
    std::vector<int64_t> nonzero;
    for (int64_t i = 0; i < n; ++i)
      if (analytic[i] != 0.0f) nonzero.push_back(i);
    std::uniform_int_distribution<int64_t> pick(0, n - 1);
    for (int s = 0; s < o.samples; ++s) {
      if (s % 2 == 0 && !nonzero.empty())
        idx.push_back(nonzero[size_t(gen() % nonzero.size())]);
      else
        idx.push_back(pick(gen));
    }
  }
  double max_abs = 0.0;
  for (int64_t i : idx) max_abs = std::max(max_abs, std::fabs(double(analytic[i])));
  int failures = 0, skipped = 0;
  for (int64_t i : idx) {
    float saved = x[i];
    x[i] = saved + o.h;
    double lp = loss();
    bool smooth = !o.smooth_here || o.smooth_here();
    x[i] = saved - o.h;
    double lm = loss();
    smooth = smooth && (!o.smooth_here || o.smooth_here());
    x[i] = saved;
    if (!smooth) {
      ++skipped;
      continue;
    }
    double numeric = (lp - lm) / (2.0 * double(o.h));
    double a = analytic[i];
    double tol = o.atol + o.rtol * std::max(std::fabs(a), std::fabs(numeric));
    if (std::fabs(a - numeric) > tol && failures++ < 5)
      ADD_FAILURE() << what << "[" << i << "]: analytic " << a << " vs numeric " << numeric;
  }
  EXPECT_EQ(failures, 0) << what << ": " << failures << " of " << idx.size() << " coordinates disagree";
  EXPECT_LE(2 * skipped, int(idx.size())) << what << ": too many coordinates were not smooth";
  // A gradient that is identically zero passes trivially; make sure it is not.
  if (o.require_nonzero) {
    EXPECT_GT(max_abs, 0.0) << what << ": gradient is all zero";
  }
}

inline void expect_gradient_matches(const std::string& what, float* x, int64_t n, const float* analytic,
                                    const std::function<double()>& loss, int samples = 24, float h = 1e-2f,
                                    double rtol = 2e-2, double atol = 2e-3) {
  GradCheckOptions o;
  o.samples = samples;
  o.h = h;
  o.rtol = rtol;
  o.atol = atol;
  expect_gradient_matches(what, x, n, analytic, loss, o);
}

}  // namespace memoe::testing
