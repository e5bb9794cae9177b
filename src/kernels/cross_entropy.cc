#include "kernels/cross_entropy.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/bf16.h"
#include "kernels/fast_exp.h"
#include "kernels/reduce.h"

namespace memoe {

double cross_entropy(const float* logits, const int64_t* targets, int64_t n, int64_t vocab, float* dlogits,
                     uint16_t* dlogits_bf16) {
  if (dlogits) dlogits_bf16 = nullptr;
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i) count += targets[i] >= 0;
  const double inv = count > 0 ? 1.0 / double(count) : 0.0;
  // Row losses summed in fixed chunks of rows, chunks in order: the total
  // does not depend on the thread count.
  const double total = chunked_sum(n, kReduceRows, n * vocab > 65536, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch(dlogits ? 0 : size_t(vocab));  // exp(row - max) when dlogits has no room for it
    double part = 0.0;
    for (int64_t i = begin; i < end; ++i) {
      const float* row = logits + i * vocab;
      float* drow = dlogits ? dlogits + i * vocab : nullptr;
      uint16_t* drow16 = dlogits_bf16 ? dlogits_bf16 + i * vocab : nullptr;
      if (targets[i] < 0) {
        if (drow) std::fill(drow, drow + vocab, 0.0f);
        if (drow16) std::fill(drow16, drow16 + vocab, uint16_t{0});
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
      const float scale = float(inv) / sum;
      if (drow) {
#pragma omp simd
        for (int64_t v = 0; v < vocab; ++v) drow[v] *= scale;
        drow[targets[i]] -= float(inv);
      } else if (drow16) {
        // The fp32 path's values, each rounded once.
#pragma omp simd
        for (int64_t v = 0; v < vocab; ++v) drow16[v] = float_to_bf16_vectorisable(e[v] * scale);
        drow16[targets[i]] = float_to_bf16(e[targets[i]] * scale - float(inv));
      }
    }
    return part;
  });
  return total * inv;
}

}  // namespace memoe
