#include "kernels/linear.h"

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <vector>

namespace memoe {

void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
          const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, int(m), int(n),
              int(k), alpha, a, int(lda), b, int(ldb), beta, c, int(ldc));
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
