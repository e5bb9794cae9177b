// Linear layers over row-major activations: y[n, out] = x[n, in] @ W[out, in]^T + b.
// All matrix products of the engine go through here (CBLAS sgemm), and give
// bitwise the same results for any thread count (see kGemmDepth in linear.cc).
#pragma once
#include <cstdint>
#include <string>

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

// bf16 products: C[m, n] = alpha * op(A) @ op(B) + beta * C as gemm above,
// with A and B in bfloat16 (raw bit patterns, as core/bf16.h and to_bf16
// make them) and the products accumulated and written in fp32. Runs oneDNN's
// matmul or OpenBLAS's sbgemm, whichever kernels/matmul_bf16.cc measured
// faster for the shape; each uses the CPU's native bf16 instructions where it
// has them (decided at run time, never at build time) and converts to fp32
// otherwise. Unlike gemm, results are not promised bitwise across thread
// counts: oneDNN does not document it, though
// MatmulBf16.ThreadCountDoesNotChangeTheBits holds for a deep and a wide
// product on the machine at hand.
void gemm_bf16(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const uint16_t* a,
               int64_t lda, const uint16_t* b, int64_t ldb, float beta, float* c, int64_t ldc);

// fp32 -> bf16 rounding to nearest even, bit for bit as float_to_bf16 in
// core/bf16.h (NaN stays NaN, subnormals round, never flushed); and the exact
// way back. Vectorised, for whatever CPU runs it.
void to_bf16(const float* x, int64_t n, uint16_t* y);
void from_bf16(const uint16_t* x, int64_t n, float* y);

// Whether gemm_bf16 runs on native bf16 instructions here (AVX512-BF16 or
// AMX-BF16, seen by cpuid and used by oneDNN's dispatch), and one line naming
// what it runs on, e.g. "oneDNN 2.6.3 avx512_core_bf16" for the CLI.
bool bf16_native();
std::string bf16_description();

// This machine's practical sgemm rate: best of `rounds` n x n x n products
// through the same BLAS and threads as the engine, in GFLOP/s. Lets a slow
// machine be recognised as such next to tokens/s.
double measure_sgemm_gflops(int64_t n = 1024, int rounds = 5);

}  // namespace memoe
