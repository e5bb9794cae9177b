// The two bf16 matrix-product libraries behind gemm_bf16 (kernels/linear.h),
// callable one by one so tests and bench/matmul_bench.cc can compare them.
// Everything else should call gemm_bf16, which picks between them.
#pragma once
#include <cstdint>
#include <string>

namespace memoe {

enum class Bf16Library { onednn, openblas };

// gemm_bf16 through one library: oneDNN's matmul primitive (created once per
// shape and cached) or OpenBLAS's cblas_sbgemm. Same contract as gemm_bf16.
void gemm_bf16_with(Bf16Library library, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                    const uint16_t* a, int64_t lda, const uint16_t* b, int64_t ldb, float beta, float* c,
                    int64_t ldc);

// Whether the OpenBLAS loaded exports cblas_sbgemm (Debian 12's does not;
// gemm_bf16_with(openblas, ...) fails with memoe::Error without it).
bool openblas_has_sbgemm();

// The library gemm_bf16 uses for a shape (the measured choice).
Bf16Library bf16_library_for(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k);

// What each library dispatches to on this CPU: oneDNN's effective ISA
// ("avx512_core_bf16", "avx2", ...), the implementation oneDNN picks for a
// plain m x n x k product ("brg:avx512_core_bf16"), OpenBLAS's core
// ("Cooperlake"), and the oneDNN version.
std::string onednn_isa_name();
std::string onednn_impl_name(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k);
std::string openblas_core_name();
std::string onednn_version();

// Number of oneDNN primitives held by the cache; for tests.
int64_t onednn_cached_primitives();

}  // namespace memoe
