#include "kernels/linear.h"

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <vector>

namespace memoe {

namespace {
// Depth (K) of each BLAS call. OpenBLAS splits a product over M and N between
// threads, never over K, but its single-threaded and threaded drivers cut a K
// between GEMM_Q and 2*GEMM_Q into two slightly different halves (here, on
// the Cooperlake kernels, K = 385, 513, 1000, 3000 all differ), so sums over
// K would depend on the thread count. A product no deeper than GEMM_Q is
// never cut, and 256 sits under GEMM_Q of the current x86-64 kernels
// (Haswell, Zen, SkylakeX: 320-448), so deeper products are issued in fixed
// 256-deep slices accumulated in slice order. BLAS itself works in K blocks
// of GEMM_Q, so this costs nothing measurable;
// ThreadCount.BlasProductsAreBitwiseTheSame checks it on the machine at hand.
constexpr int64_t kGemmDepth = 256;
}  // namespace

void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
          const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  int64_t k0 = 0;
  do {
    const int64_t depth = std::min(kGemmDepth, k - k0);
    // Column k0 of op(A) and row k0 of op(B).
    const float* a0 = trans_a ? a + k0 * lda : a + k0;
    const float* b0 = trans_b ? b + k0 : b + k0 * ldb;
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, int(m),
                int(n), int(depth), alpha, a0, int(lda), b0, int(ldb), k0 == 0 ? beta : 1.0f, c, int(ldc));
    k0 += depth;
  } while (k0 < k);
}

void linear_forward(const float* x, const float* w, const float* bias, int64_t n, int64_t in, int64_t out, float* y) {
  if (bias) {
    for (int64_t i = 0; i < n; ++i) std::memcpy(y + i * out, bias, sizeof(float) * size_t(out));
  }
  gemm(false, true, n, out, in, 1.0f, x, in, w, in, bias ? 1.0f : 0.0f, y, out);
}

void linear_backward(const float* dy, const float* x, const float* w, int64_t n, int64_t in, int64_t out, float* dx,
                     float* dw, float* dbias) {
  if (n == 0) return;
  if (dx) gemm(false, false, n, in, out, 1.0f, dy, out, w, in, 1.0f, dx, in);
  if (dw) gemm(true, false, out, in, n, 1.0f, dy, out, x, in, 1.0f, dw, in);
  if (dbias) {
    for (int64_t i = 0; i < n; ++i)
      for (int64_t o = 0; o < out; ++o) dbias[o] += dy[i * out + o];
  }
}

double measure_sgemm_gflops(int64_t n, int rounds) {
  std::vector<float> a(size_t(n * n), 1.0f), b(size_t(n * n), 0.5f), c(size_t(n * n));
  double best = 0;
  for (int r = 0; r < rounds; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    gemm(false, false, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, 2.0 * double(n) * double(n) * double(n) / s / 1e9);
  }
  return best;
}

}  // namespace memoe
