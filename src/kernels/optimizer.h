// Optimizer arithmetic over flat float runs. The optimizer (train/adamw)
// decides which tensors, rows and rates; these loops do the elements.
#pragma once
#include <cstdint>

namespace memoe {

struct AdamWStep {
  float lr, beta1, beta2, eps;
  float weight_decay;  // decoupled: w -= lr * decay * w (0 for no decay)
  float bias_correction1, bias_correction2;  // 1 - beta^t
};

// One AdamW update of n contiguous elements (torch.optim.AdamW's rule):
// m = b1 m + (1-b1) g; v = b2 v + (1-b2) g²; w -= lr (m̂ / (sqrt(v̂) + eps) + decay w).
void adamw_update(float* w, const float* g, float* m, float* v, int64_t n, const AdamWStep& s);

// The same update on many (w, g, m, v, n, step) runs at once, shared among
// the threads; each run is updated by one thread, so the result does not
// depend on the thread count.
struct AdamWRun {
  float* w;
  const float* g;
  float* m;
  float* v;
  int64_t n;
  const AdamWStep* step;
};
void adamw_update_runs(const AdamWRun* runs, int64_t count);

}  // namespace memoe
