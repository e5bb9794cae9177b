#include "kernels/cross_entropy.h"

#include <algorithm>
#include <cmath>

namespace memoe {

double cross_entropy(const float* logits, const int64_t* targets, int64_t n, int64_t vocab, float* dlogits) {
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i) count += targets[i] >= 0;
  const double inv = count > 0 ? 1.0 / double(count) : 0.0;
  double total = 0.0;
#pragma omp parallel for reduction(+ : total) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float* row = logits + i * vocab;
    float* drow = dlogits ? dlogits + i * vocab : nullptr;
    if (targets[i] < 0) {
      if (drow) std::fill(drow, drow + vocab, 0.0f);
      continue;
    }
    float mx = *std::max_element(row, row + vocab);
    double sum = 0.0;
    for (int64_t v = 0; v < vocab; ++v) sum += std::exp(double(row[v] - mx));
    double lse = double(mx) + std::log(sum);
    total += lse - double(row[targets[i]]);
    if (drow) {
      for (int64_t v = 0; v < vocab; ++v) drow[v] = float(std::exp(double(row[v]) - lse) * inv);
      drow[targets[i]] -= float(inv);
    }
  }
  return total * inv;
}

}  // namespace memoe
