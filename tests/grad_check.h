// Finite-difference gradient checks shared by the layer tests.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <sstream>
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
  // Coordinate i passes when |numeric_i - analytic_i| <= rtol * max(|analytic_i|,
  // scale) + atol, with scale the RMS of the tensor's whole analytic gradient:
  // relative to the tensor, whatever its size (a fixed absolute tolerance
  // passes anything in a tensor whose gradient is ~1e-3), and not demanding
  // more of a near-zero entry than the finite difference's noise at the
  // tensor's scale. atol is only a floor for tensors whose gradient is ~0.
  double rtol = 2e-2;
  double atol = 1e-6;
  // Half of the samples are drawn among coordinates with a non-zero analytic
  // gradient (the other half uniformly), and some gradient must be non-zero.
  bool require_nonzero = true;
  // Called after each pair of perturbed evaluations; false means the
  // function was not smooth there (e.g. an MoE routing decision flipped), so
  // that coordinate is skipped. At least half must be usable.
  std::function<bool()> smooth_here;
};

// Central differences at sampled coordinates, without any verdict: the
// non-fatal half of the check, so that a test can also show that a wrong
// gradient is caught.
struct GradCheck {
  std::vector<int64_t> coords;   // sampled coordinates where the function was smooth
  std::vector<double> numeric;   // (loss(x_i + h) - loss(x_i - h)) / 2h there
  int sampled = 0, skipped = 0;
  double rms = 0.0;              // RMS of the whole analytic gradient
  double max_abs = 0.0;          // max |analytic| over the sampled coordinates

  // How many coordinates disagree with factor * analytic (factor 1: the
  // check itself; 0.5: a halved gradient, which must disagree). Describes
  // the first few in *why.
  int disagreements(const float* analytic, double factor, const GradCheckOptions& o,
                    std::vector<std::string>* why = nullptr) const {
    const double scale = std::fabs(factor) * rms;
    int bad = 0;
    for (size_t k = 0; k < coords.size(); ++k) {
      const double a = factor * double(analytic[coords[k]]);
      if (std::fabs(a - numeric[k]) <= o.rtol * std::max(std::fabs(a), scale) + o.atol) continue;
      if (why && bad < 5) {
        std::ostringstream line;
        line << "[" << coords[k] << "]: analytic " << a << " vs numeric " << numeric[k] << " (gradient RMS " << scale
             << ")";
        why->push_back(line.str());
      }
      ++bad;
    }
    return bad;
  }
};

// Samples coordinates of x (all of them when n <= samples) and evaluates the
// central differences there. loss() must recompute everything from x's
// current contents; x is restored.
inline GradCheck finite_differences(float* x, int64_t n, const float* analytic, const std::function<double()>& loss,
                                    const GradCheckOptions& o) {
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
  GradCheck r;
  r.sampled = int(idx.size());
  double sq = 0.0;
  for (int64_t i = 0; i < n; ++i) sq += double(analytic[i]) * double(analytic[i]);
  r.rms = n > 0 ? std::sqrt(sq / double(n)) : 0.0;
  for (int64_t i : idx) r.max_abs = std::max(r.max_abs, std::fabs(double(analytic[i])));
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
      ++r.skipped;
      continue;
    }
    r.coords.push_back(i);
    r.numeric.push_back((lp - lm) / (2.0 * double(o.h)));
  }
  return r;
}

// The check: analytic agrees with the finite differences at every sampled
// coordinate, enough coordinates were smooth, the gradient is not all zero
// (require_nonzero), and the check can fail: the same differences reject
// half the analytic gradient (a dropped factor, a missing half of a sum).
inline void expect_gradient_matches(const std::string& what, float* x, int64_t n, const float* analytic,
                                    const std::function<double()>& loss, const GradCheckOptions& o) {
  const GradCheck r = finite_differences(x, n, analytic, loss, o);
  std::vector<std::string> why;
  const int failures = r.disagreements(analytic, 1.0, o, &why);
  for (const std::string& w : why) ADD_FAILURE() << what << w;
  EXPECT_EQ(failures, 0) << what << ": " << failures << " of " << r.coords.size() << " coordinates disagree";
  EXPECT_LE(2 * r.skipped, r.sampled) << what << ": too many coordinates were not smooth";
  // A gradient that is identically zero passes trivially; make sure it is not.
  if (o.require_nonzero) {
    EXPECT_GT(r.max_abs, 0.0) << what << ": gradient is all zero";
  }
  if (r.max_abs > 0.0) {
    EXPECT_GT(r.disagreements(analytic, 0.5, o), 0) << what << ": half the analytic gradient passes as well";
  }
}

inline void expect_gradient_matches(const std::string& what, float* x, int64_t n, const float* analytic,
                                    const std::function<double()>& loss, int samples = 24, float h = 1e-2f,
                                    double rtol = 2e-2, double atol = 1e-6) {
  GradCheckOptions o;
  o.samples = samples;
  o.h = h;
  o.rtol = rtol;
  o.atol = atol;
  expect_gradient_matches(what, x, n, analytic, loss, o);
}

}  // namespace memoe::testing
