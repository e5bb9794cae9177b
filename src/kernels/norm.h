// RMSNorm over the last dimension: y = x / sqrt(mean(x^2) + eps) * g.
#pragma once
#include <cstdint>

namespace memoe {

// rstd[i] = 1/sqrt(mean(x_i^2)+eps) is saved for the backward pass (may be null).
void rmsnorm_forward(const float* x, const float* g, float eps, int64_t n, int64_t d, float* y, float* rstd);

// Adds into dx and dg (dg may be null).
void rmsnorm_backward(const float* dy, const float* x, const float* g, const float* rstd, int64_t n, int64_t d,
                      float* dx, float* dg);

}  // namespace memoe
