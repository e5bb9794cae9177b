#include "kernels/activation.h"

#include "core/bf16.h"

namespace memoe {

void swiglu_forward(const float* a, const float* b, int64_t n, float* h) {
#pragma omp parallel for simd schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) h[i] = a[i] * sigmoidf(a[i]) * b[i];
}

void swiglu_forward_bf16(const float* a, const float* b, int64_t n, uint16_t* h) {
#pragma omp parallel for simd schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) h[i] = float_to_bf16_vectorisable(a[i] * sigmoidf(a[i]) * b[i]);
}

void swiglu_backward(const float* dh, const float* a, const float* b, int64_t n, float* da, float* db) {
#pragma omp parallel for simd schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    float s = sigmoidf(a[i]);
    float silu = a[i] * s;
    da[i] += dh[i] * b[i] * s * (1.0f + a[i] * (1.0f - s));
    db[i] += dh[i] * silu;
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
