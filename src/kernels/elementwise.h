// Elementwise and strided-copy loops the layers sequence between the larger
// kernels: residual adds, scaling, per-row scaling, and copies of column
// blocks between row-major matrices of different widths.
#pragma once
#include <cstdint>

namespace memoe {

// dst[i] += src[i] for i < n.
void add_into(float* dst, const float* src, int64_t n);

// out[i] = a[i] + b[i] for i < n: a residual add written straight into the
// buffer that keeps its result, instead of an add and then a copy.
void add(const float* a, const float* b, int64_t n, float* out);

// x[i] *= factor for i < n.
void scale_in_place(float* x, int64_t n, float factor);

// y[i, :] = s[i] * x[i, :] for n rows of width d. Overwrites y.
void scale_rows(const float* x, const float* s, int64_t n, int64_t d, float* y);

// dst[i*dst_ld + j] = src[i*src_ld + j] for n rows and j < width.
void copy_columns(const float* src, int64_t src_ld, int64_t n, int64_t width, float* dst, int64_t dst_ld);

}  // namespace memoe
