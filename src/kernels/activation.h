// SwiGLU's gate: h = silu(a) * b, elementwise (clamped for V4); and plain SiLU.
#pragma once
#include <cmath>
#include <cstdint>

#include "kernels/fast_exp.h"

namespace memoe {

// Branch-free, so loops that call it vectorise: e = exp(-|x|) never
// overflows, and sigmoid(x) is 1/(1+e) for x >= 0, e/(1+e) below.
inline float sigmoidf(float x) {
  const float e = exp_nonpositive(-std::fabs(x));
  const float r = 1.0f / (1.0f + e);
  return x >= 0.0f ? r : e * r;
}

// limit > 0 is V4's swiglu_limit L: h = silu(min(a, L)) * clamp(b, -L, L).
void swiglu_forward(const float* a, const float* b, int64_t n, float* h, float limit = 0.0f);
// The same h rounded to bf16 as it is made (float_to_bf16 of each value):
// the one form a bf16 product reads, stored at half the bytes.
void swiglu_forward_bf16(const float* a, const float* b, int64_t n, uint16_t* h, float limit = 0.0f);
// Adds into da and db; zero gradient where a value was clamped.
void swiglu_backward(const float* dh, const float* a, const float* b, int64_t n, float* da, float* db,
                     float limit = 0.0f);

void silu_forward(const float* a, int64_t n, float* y);
// Adds into da.
void silu_backward(const float* dy, const float* a, int64_t n, float* da);

}  // namespace memoe
