#include "kernels/few_rows.h"

#include <omp.h>

#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define MEMOE_FEW_ROWS_AVX512 1
#endif

namespace memoe {

namespace {

inline float widen(float x) { return x; }
inline float widen(uint16_t x) {
  const uint32_t bits = uint32_t(x) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// The portable loop: one vectorised reduction per output.
template <class W>
void dot_rows_portable(int64_t m, int64_t k, const float* a, int64_t lda, const W* w, float* sums) {
  for (int64_t r = 0; r < m; ++r) {
    const float* x = a + r * lda;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t p = 0; p < k; ++p) sum += x[p] * widen(w[p]);
    sums[r] = sum;
  }
}

#ifdef MEMOE_FEW_ROWS_AVX512
// GCC 12's intrinsics headers start some conversions and reductions from an
// undefined vector, which -Wuninitialized reports where they are inlined.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#define MEMOE_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))

MEMOE_AVX512 inline __m512 load16(const float* w, __mmask16 mask) { return _mm512_maskz_loadu_ps(mask, w); }
MEMOE_AVX512 inline __m512 load16(const uint16_t* w, __mmask16 mask) {
  const __m512i wide = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, w));
  return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}

// M rows of A against one weight row, four accumulators a row, so that the
// multiply-adds of a row do not wait on each other, and each accumulator
// summed as a tree at the end. (The compiler's reduction for the portable
// loop adds the 16 lanes one after another: a third of the kernel's time on
// moe-medium's 512- and 768-long rows.) The weight row is read once for all
// M rows.
template <int M, class W>
MEMOE_AVX512 void dot_rows_avx512(int64_t k, const float* a, int64_t lda, const W* w, float* sums) {
  __m512 acc[M][4];
  for (int r = 0; r < M; ++r)
    for (int u = 0; u < 4; ++u) acc[r][u] = _mm512_setzero_ps();
  int64_t p = 0;
  for (; p + 64 <= k; p += 64) {
    // The weights stream from memory, rows one after another: two lines
    // 1 KiB ahead (into the next rows) are asked for each step, half of what
    // a step of fp32 weights reads, all of a step of bf16; the hardware
    // prefetcher alone falls behind (1 thread, moe-medium fp32 decode: 50 ->
    // 58 tokens/s; asking for every line was slower, 53).
    const char* ahead = reinterpret_cast<const char*>(w + p) + 1024;
    _mm_prefetch(ahead, _MM_HINT_T0);
    _mm_prefetch(ahead + 32 * int(sizeof(W)), _MM_HINT_T0);
    __m512 wv[4];
    for (int u = 0; u < 4; ++u) wv[u] = load16(w + p + 16 * u, 0xffff);
    for (int r = 0; r < M; ++r)
      for (int u = 0; u < 4; ++u)
        acc[r][u] = _mm512_fmadd_ps(_mm512_loadu_ps(a + r * lda + p + 16 * u), wv[u], acc[r][u]);
  }
  for (int u = 0; p < k; p += 16, u = (u + 1) & 3) {
    const int64_t left = k - p;
    const __mmask16 mask = left >= 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1);
    const __m512 wv = load16(w + p, mask);
    for (int r = 0; r < M; ++r)
      acc[r][u] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, a + r * lda + p), wv, acc[r][u]);
  }
  for (int r = 0; r < M; ++r)
    sums[r] = _mm512_reduce_add_ps(
        _mm512_add_ps(_mm512_add_ps(acc[r][0], acc[r][1]), _mm512_add_ps(acc[r][2], acc[r][3])));
}

template <class W>
MEMOE_AVX512 void dot_rows_avx512(int64_t m, int64_t k, const float* a, int64_t lda, const W* w, float* sums) {
  switch (m) {
    case 1: dot_rows_avx512<1>(k, a, lda, w, sums); break;
    case 2: dot_rows_avx512<2>(k, a, lda, w, sums); break;
    case 3: dot_rows_avx512<3>(k, a, lda, w, sums); break;
    default: dot_rows_avx512<4>(k, a, lda, w, sums); break;
  }
}

#pragma GCC diagnostic pop

bool has_avx512() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl");
}
#else
bool has_avx512() { return false; }
#endif

template <class W>
void few_rows(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const W* b, int64_t ldb, float beta,
              float* c, int64_t ldc, bool portable) {
  static const bool avx512 = has_avx512();
  const bool vectorised = avx512 && !portable;
#pragma omp parallel for schedule(static) if (n * k > kFewRowsThreadedWeights && !omp_in_parallel())
  for (int64_t j = 0; j < n; ++j) {
    float sums[kFewRows];
#ifdef MEMOE_FEW_ROWS_AVX512
    if (vectorised)
      dot_rows_avx512(m, k, a, lda, b + j * ldb, sums);
    else
#endif
      dot_rows_portable(m, k, a, lda, b + j * ldb, sums);
    for (int64_t r = 0; r < m; ++r) {
      float& out = c[r * ldc + j];
      out = beta == 0.0f ? sums[r] : sums[r] + beta * out;
    }
  }
}

}  // namespace

void few_rows_product(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
                      float beta, float* c, int64_t ldc, bool portable) {
  few_rows(m, n, k, a, lda, b, ldb, beta, c, ldc, portable);
}

void few_rows_product(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const uint16_t* b, int64_t ldb,
                      float beta, float* c, int64_t ldc, bool portable) {
  few_rows(m, n, k, a, lda, b, ldb, beta, c, ldc, portable);
}

bool few_rows_vectorised() { return has_avx512(); }

}  // namespace memoe
