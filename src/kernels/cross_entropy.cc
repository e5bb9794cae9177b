#include "kernels/cross_entropy.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/fast_exp.h"
#include "kernels/reduce.h"

namespace memoe {

double cross_entropy(const float* logits, const int64_t* targets, int64_t n, int64_t vocab, float* dlogits) {
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i) count += targets[i] >= 0;
  const double inv = count > 0 ? 1.0 / double(count) : 0.0;
  // Row losses summed in fixed chunks of rows, chunks in order: the total
  // does not depend on the thread count.
  const double total = chunked_sum(n, kReduceRows, n * vocab > 65536, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch(dlogits ? 0 : size_t(vocab));
    double part = 0.0;
    for (int64_t i = begin; i < end; ++i) {
      const float* row = logits + i * vocab;
      float* drow = dlogits ? dlogits + i * vocab : nullptr;
      if (targets[i] < 0) {
        if (drow) std::fill(drow, drow + vocab, 0.0f);
        continue;
      }
      const float mx = *std::max_element(row, row + vocab);
      // exp(row - max) once, in float, into dlogits (or scratch) for the sum.
      float* e = drow ? drow : scratch.data();
      float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
      for (int64_t v = 0; v < vocab; ++v) {
        e[v] = exp_nonpositive(row[v] - mx);
        sum += e[v];
      }
      part += double(mx) + std::log(double(sum)) - double(row[targets[i]]);
      if (drow) {
        const float scale = float(inv) / sum;
#pragma omp simd
        for (int64_t v = 0; v < vocab; ++v) drow[v] *= scale;
        drow[targets[i]] -= float(inv);
      }
    }
    return part;
  });
  return total * inv;
}

}  // namespace memoe
