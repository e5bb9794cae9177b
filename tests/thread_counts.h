// Runs a computation at 1, 2 and 3 OpenMP (and OpenBLAS) threads so tests can
// require results that do not depend on the thread count, bit for bit.
#pragma once
#include <cblas.h>
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

namespace memoe::testing {

inline constexpr int kThreadCounts[] = {1, 2, 3};

// fn() run with `threads` OpenMP and OpenBLAS threads; the previous counts are
// restored afterwards. Dynamic teams are off so the count is really used.
template <typename Fn>
auto with_threads(int threads, Fn&& fn) {
  struct Restore {
    int omp = omp_get_max_threads(), blas = openblas_get_num_threads();
    int dynamic = omp_get_dynamic();
    ~Restore() {
      omp_set_num_threads(omp);
      openblas_set_num_threads(blas);
      omp_set_dynamic(dynamic);
    }
  } restore;
  omp_set_dynamic(0);
  omp_set_num_threads(threads);
  openblas_set_num_threads(threads);
  return fn();
}


// Index of the first differing element, or -1; for failure messages.
inline long first_difference(const std::vector<float>& a, const std::vector<float>& b) {
  for (size_t i = 0; i < a.size() && i < b.size(); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0) return long(i);
  return a.size() == b.size() ? -1 : long(std::min(a.size(), b.size()));
}

// Runs fn() (returning a std::vector<float>) at 1, 2 and 3 threads and
// expects the three results to be bitwise equal.
template <typename Fn>
void expect_same_bits_for_thread_counts(const std::string& what, Fn&& fn) {
  const std::vector<float> one = with_threads(1, fn);
  for (int threads : kThreadCounts) {
    if (threads == 1) continue;
    const std::vector<float> many = with_threads(threads, fn);
    const long at = first_difference(one, many);
    EXPECT_EQ(at, -1) << what << " differs between 1 and " << threads << " threads at element " << at << ": "
                      << (at >= 0 && size_t(at) < one.size() ? one[size_t(at)] : 0.0f) << " vs "
                      << (at >= 0 && size_t(at) < many.size() ? many[size_t(at)] : 0.0f);
  }
}

// The same for a scalar result (compared as bits).
template <typename Fn>
void expect_same_double_for_thread_counts(const std::string& what, Fn&& fn) {
  const double one = with_threads(1, fn);
  for (int threads : kThreadCounts) {
    if (threads == 1) continue;
    const double many = with_threads(threads, fn);
    EXPECT_EQ(std::memcmp(&one, &many, sizeof(double)), 0)
        << what << " differs between 1 and " << threads << " threads: " << one << " vs " << many;
  }
}

}  // namespace memoe::testing
