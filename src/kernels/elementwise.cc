#include "kernels/elementwise.h"

#include <cstring>

namespace memoe {

void add_into(float* dst, const float* src, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
}

void add(const float* a, const float* b, int64_t n, float* out) {
#pragma omp parallel for simd schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

void scale_in_place(float* x, int64_t n, float factor) {
#pragma omp parallel for simd schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) x[i] *= factor;
}

void scale_rows(const float* x, const float* s, int64_t n, int64_t d, float* y) {
#pragma omp parallel for schedule(static) if (n * d > 65536)
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < d; ++j) y[i * d + j] = s[i] * x[i * d + j];
}

void copy_columns(const float* src, int64_t src_ld, int64_t n, int64_t width, float* dst, int64_t dst_ld) {
#pragma omp parallel for schedule(static) if (n * width > 65536)
  for (int64_t i = 0; i < n; ++i) std::memcpy(dst + i * dst_ld, src + i * src_ld, sizeof(float) * size_t(width));
}

}  // namespace memoe
