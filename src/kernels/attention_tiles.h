// Small dense building blocks for the tiled attention kernel: a register-
// blocked tile product and a branch-free exp. Internal to attention.cc.
//
// Hand-written rather than cblas_sgemm because the tiles are tiny (64 x 64 x
// D) and called from inside an OpenMP region: per-call BLAS overhead and
// OpenBLAS's own threading cost more than the product itself at these sizes.
#pragma once
#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>

#include "kernels/fast_exp.h"

namespace memoe::attention_tiles {

using memoe::exp_nonpositive;

// The tile products for one vector width: Lanes floats a vector (16 for
// AVX-512, 8 for AVX2, 4 elsewhere). GCC/Clang lower vector_size types to
// whatever the enclosing function's target supports; attention.cc
// instantiates these for the build's own width and, where the CPU has it,
// for AVX-512 inside functions compiled for it (chosen at run time). Each
// element of C is one accumulator summed over K in order, so the bits do not
// depend on the width (with FMA in both).
// The build's own width: what every function compiled without a target
// attribute can use.
#if defined(__AVX512F__)
inline constexpr int kBuildLanes = 16;
#elif defined(__AVX__)
inline constexpr int kBuildLanes = 8;
#else
inline constexpr int kBuildLanes = 4;
#endif

// PinB keeps each row of B in a register (see micro_product): only where the
// vectors fit the registers of the code they are compiled into, so a wider
// instantiation outside its target attribute (a test's) goes without.
template <int Lanes, bool PinB = (Lanes <= kBuildLanes)>
struct Tiles {
  static constexpr int kLanes = Lanes;
  // R x NV accumulators: 4 x 4 = 16 of AVX-512's 32 registers, 4 x 2 = 8 of 16.
  static constexpr int kVecsPerChunk = Lanes >= 16 ? 4 : 2;
  static constexpr int kRowsPerChunk = 4;
  typedef float VecF __attribute__((vector_size(Lanes * sizeof(float))));

  // Through references, not by value: a 64-byte vector passed by value in a
  // function compiled without AVX-512 would change the calling convention.
  static void load_vec(VecF& v, const float* p) { std::memcpy(&v, p, sizeof(v)); }  // one unaligned load
  static void store_vec(float* p, const VecF& v) { std::memcpy(p, &v, sizeof(v)); }

  // C[R x NV*kLanes] (+)= A[R x K] * B[K x NV*kLanes], A(r, k) = a[r*a_rs + k*a_cs].
  // R and NV are compile-time so the accumulators live in registers.
  template <int R, int NV>
  static void micro_product(int64_t depth, const float* a, int64_t a_rs, int64_t a_cs, const float* b,
                            int64_t ldb, float* c, int64_t ldc, bool accumulate) {
    VecF acc[R][NV];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) {
        if (accumulate) {
          load_vec(acc[r][v], c + r * ldc + v * kLanes);
        } else {
          acc[r][v] = VecF{};
        }
      }
    for (int64_t k = 0; k < depth; ++k) {
      VecF bv[NV];
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) {
        load_vec(bv[v], b + k * ldb + v * kLanes);
#if defined(__x86_64__)
        // Keeps the row of B in a register: otherwise GCC folds the load into
        // every FMA and the loop becomes bound by loads instead of FMAs.
        if constexpr (PinB) __asm__("" : "+v"(bv[v]));
#endif
      }
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const float ar = a[r * a_rs + k * a_cs];
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) acc[r][v] += ar * bv[v];
      }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) store_vec(c + r * ldc + v * kLanes, acc[r][v]);
  }

  // Columns [n_begin, n_end) of C for R rows, scalar (the ragged right edge).
  template <int R>
  static void scalar_columns(int64_t depth, const float* a, int64_t a_rs, int64_t a_cs, const float* b,
                             int64_t ldb, float* c, int64_t ldc, bool accumulate, int64_t n_begin, int64_t n_end) {
    for (int r = 0; r < R; ++r)
      for (int64_t n = n_begin; n < n_end; ++n) {
        float sum = accumulate ? c[r * ldc + n] : 0.0f;
        for (int64_t k = 0; k < depth; ++k) sum += a[r * a_rs + k * a_cs] * b[k * ldb + n];
        c[r * ldc + n] = sum;
      }
  }

  template <int R>
  static void row_block(int64_t n_cols, int64_t depth, const float* a, int64_t a_rs, int64_t a_cs, const float* b,
                        int64_t ldb, float* c, int64_t ldc, bool accumulate) {
    constexpr int64_t kChunk = int64_t{kVecsPerChunk} * kLanes;
    int64_t n = 0;
    for (; n + kChunk <= n_cols; n += kChunk)
      micro_product<R, kVecsPerChunk>(depth, a, a_rs, a_cs, b + n, ldb, c + n, ldc, accumulate);
    for (; n + kLanes <= n_cols; n += kLanes)
      micro_product<R, 1>(depth, a, a_rs, a_cs, b + n, ldb, c + n, ldc, accumulate);
    if (n < n_cols) scalar_columns<R>(depth, a, a_rs, a_cs, b, ldb, c, ldc, accumulate, n, n_cols);
  }

  // C[M x N] (+)= A[M x K] * B[K x N]. A is addressed through two strides so
  // that transposed tiles (P^T, dS^T) need no copy; B and C are row-major
  // with leading dimensions ldb, ldc. accumulate=false overwrites C.
  static void tile_product(int64_t m_rows, int64_t n_cols, int64_t depth, const float* a, int64_t a_rs,
                           int64_t a_cs, const float* b, int64_t ldb, float* c, int64_t ldc, bool accumulate) {
    int64_t i = 0;
    for (; i + kRowsPerChunk <= m_rows; i += kRowsPerChunk)
      row_block<kRowsPerChunk>(n_cols, depth, a + i * a_rs, a_rs, a_cs, b, ldb, c + i * ldc, ldc, accumulate);
    for (; i < m_rows; ++i) row_block<1>(n_cols, depth, a + i * a_rs, a_rs, a_cs, b, ldb, c + i * ldc, ldc, accumulate);
  }
};

}  // namespace memoe::attention_tiles
