#include "kernels/optimizer.h"

#include <cmath>

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
#pragma omp parallel for schedule(dynamic, 8) if (count > 1)
  for (int64_t r = 0; r < count; ++r) {
    const AdamWRun& run = runs[r];
    adamw_update(run.w, run.g, run.m, run.v, run.n, *run.step);
  }
}

}  // namespace memoe
