#include "kernels/bandwidth.h"

#include <algorithm>
#include <chrono>
#include <vector>

namespace memoe {

double measure_read_bandwidth(size_t bytes, int rounds) {
  const size_t n = bytes / sizeof(float);
  std::vector<float> a(n, 1.0f);
  double best = 0;
  volatile float sink = 0;
  for (int r = 0; r < rounds; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    float total = 0;
#pragma omp parallel for reduction(+ : total) schedule(static)
    for (size_t block = 0; block < n / 4096; ++block) {
      // 64 independent sums per block: the loop vectorises into several
      // accumulators, so it waits on memory, not on the adds.
      float s[64] = {};
      const float* p = a.data() + block * 4096;
      for (size_t i = 0; i < 4096; i += 64)
        for (int j = 0; j < 64; ++j) s[j] += p[i + size_t(j)];
      for (float x : s) total += x;
    }
    sink = sink + total;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, double(n / 4096 * 4096 * sizeof(float)) / s / 1e9);
  }
  return best;
}

}  // namespace memoe
