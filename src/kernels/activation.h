// SwiGLU's gate: h = silu(a) * b, elementwise; and plain SiLU.
#pragma once
#include <cstdint>

namespace memoe {

inline float sigmoidf(float x) { return 1.0f / (1.0f + __builtin_expf(-x)); }

void swiglu_forward(const float* a, const float* b, int64_t n, float* h);
// Adds into da and db.
void swiglu_backward(const float* dh, const float* a, const float* b, int64_t n, float* da, float* db);

void silu_forward(const float* a, int64_t n, float* y);
// Adds into da.
void silu_backward(const float* dy, const float* a, int64_t n, float* da);

}  // namespace memoe
