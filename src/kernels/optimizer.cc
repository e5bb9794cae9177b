#include "kernels/optimizer.h"

#include <algorithm>
#include <cmath>

#include "kernels/prefetch.h"

namespace memoe {

void adamw_update(float* w, const float* g, float* m, float* v, int64_t n, const AdamWStep& s) {
  const float b1 = s.beta1, b2 = s.beta2, bc1 = s.bias_correction1, bc2 = s.bias_correction2;
  const float lr = s.lr, eps = s.eps, decay = s.weight_decay;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    m[i] = b1 * m[i] + (1 - b1) * g[i];
    v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
    const float mhat = m[i] / bc1, vhat = v[i] / bc2;
    w[i] -= lr * (mhat / (std::sqrt(vhat) + eps) + decay * w[i]);
  }
}

void adamw_update_runs(const AdamWRun* runs, int64_t count) {
  // Each thread updates contiguous chunks of runs; a short run's weights and
  // moments (an Engram table's row, one of rows spread at random over tables
  // larger than the caches) are asked for kGatherAhead runs before they are
  // updated. Long runs (dense tensors) are sequential: the hardware's own
  // prefetcher follows them.
  constexpr int64_t kChunk = 64, kShortRun = 1024;
#pragma omp parallel for schedule(dynamic, 1) if (count > 1)
  for (int64_t c = 0; c < count; c += kChunk) {
    const int64_t end = std::min(count, c + kChunk);
    for (int64_t r = c; r < end; ++r) {
      if (r + kGatherAhead < end && runs[r + kGatherAhead].n <= kShortRun) {
        const AdamWRun& next = runs[r + kGatherAhead];
        const size_t bytes = size_t(next.n) * sizeof(float);
        prefetch_bytes(next.w, bytes, true);
        prefetch_bytes(next.m, bytes, true);
        prefetch_bytes(next.v, bytes, true);
        prefetch_bytes(next.g, bytes);
      }
      const AdamWRun& run = runs[r];
      adamw_update(run.w, run.g, run.m, run.v, run.n, *run.step);
    }
  }
}

}  // namespace memoe
