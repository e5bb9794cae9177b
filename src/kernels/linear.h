// Linear layers over row-major activations: y[n, out] = x[n, in] @ W[out, in]^T + b.
// All matrix products of the engine go through here (CBLAS sgemm), and give
// bitwise the same results for any thread count (see kGemmDepth in linear.cc).
#pragma once
#include <cstdint>

namespace memoe {

// y = x @ W^T (+ bias when not null). Overwrites y.
void linear_forward(const float* x, const float* w, const float* bias, int64_t n, int64_t in, int64_t out, float* y);

// Adds the gradients: dx += dy @ W, dW += dy^T @ x, dbias += sum_n dy.
// Any of dx, dw, dbias may be null to skip it.
void linear_backward(const float* dy, const float* x, const float* w, int64_t n, int64_t in, int64_t out, float* dx,
                     float* dw, float* dbias);

// General C[m, n] = alpha * op(A) @ op(B) + beta * C with leading dimensions, row-major.
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
          const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

// This machine's practical sgemm rate: best of `rounds` n x n x n products
// through the same BLAS and threads as the engine, in GFLOP/s. Lets a slow
// machine be recognised as such next to tokens/s.
double measure_sgemm_gflops(int64_t n = 1024, int rounds = 5);

}  // namespace memoe
