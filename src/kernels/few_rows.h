// Products of a few activation rows against a row-major weight, the shape of
// decoding: C[m, n] = A[m, k] B[n, k]^T (+ beta C) for m <= kFewRows, with B
// in fp32 or bf16 (widened in registers). Each output is one dot product
// summed in a fixed order by one thread, so the bits do not depend on the
// thread count.
#pragma once

#include <cstdint>

namespace memoe {

inline constexpr int64_t kFewRows = 4;

// Weights of more than this many values are split over the thread team
// (outside a parallel region); smaller ones run on the calling thread,
// because waking a sleeping team cost more than they take (moe-medium bf16
// decode on 2 threads: 75 tokens/s with a 128 K threshold, 159 on 1 thread).
inline constexpr int64_t kFewRowsThreadedWeights = int64_t(1) << 22;

// portable = true runs the portable loop even where the AVX-512 one could
// (for the tests, which check both against fp64).
void few_rows_product(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
                      float beta, float* c, int64_t ldc, bool portable = false);
void few_rows_product(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const uint16_t* b, int64_t ldb,
                      float beta, float* c, int64_t ldc, bool portable = false);

// Whether the AVX-512 loop runs here (else a portable one).
bool few_rows_vectorised();

}  // namespace memoe
