#include "kernels/activation.h"

#include <algorithm>

#include "core/bf16.h"

namespace memoe {

namespace {

// V4's clamp (Expert.forward): the gate from above, the up projection both
// ways. No limit: the values themselves, so those models' bits are as before.
inline float clamp_gate(float a, float limit) { return limit > 0.0f ? std::min(a, limit) : a; }
inline float clamp_up(float b, float limit) { return limit > 0.0f ? std::clamp(b, -limit, limit) : b; }

}  // namespace

void swiglu_forward(const float* a, const float* b, int64_t n, float* h, float limit) {
#pragma omp parallel for simd schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    const float g = clamp_gate(a[i], limit);
    h[i] = g * sigmoidf(g) * clamp_up(b[i], limit);
  }
}

void swiglu_forward_bf16(const float* a, const float* b, int64_t n, uint16_t* h, float limit) {
#pragma omp parallel for simd schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    const float g = clamp_gate(a[i], limit);
    h[i] = float_to_bf16_vectorisable(g * sigmoidf(g) * clamp_up(b[i], limit));
  }
}

void swiglu_backward(const float* dh, const float* a, const float* b, int64_t n, float* da, float* db, float limit) {
#pragma omp parallel for simd schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    // Where a value was clamped its gradient is zero; at the limit itself it
    // passes, as torch.clamp's does.
    const float g = clamp_gate(a[i], limit), u = clamp_up(b[i], limit);
    const bool gate_free = !(limit > 0.0f) || a[i] <= limit;
    const bool up_free = !(limit > 0.0f) || (b[i] >= -limit && b[i] <= limit);
    float s = sigmoidf(g);
    float silu = g * s;
    da[i] += gate_free ? dh[i] * u * s * (1.0f + g * (1.0f - s)) : 0.0f;
    db[i] += up_free ? dh[i] * silu : 0.0f;
  }
}

void silu_forward(const float* a, int64_t n, float* y) {
#pragma omp parallel for simd schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) y[i] = a[i] * sigmoidf(a[i]);
}

void silu_backward(const float* dy, const float* a, int64_t n, float* da) {
#pragma omp parallel for simd schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    float s = sigmoidf(a[i]);
    da[i] += dy[i] * s * (1.0f + a[i] * (1.0f - s));
  }
}

}  // namespace memoe
