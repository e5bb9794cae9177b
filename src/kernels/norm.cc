#include "kernels/norm.h"

#include <cmath>

#include "kernels/reduce.h"

namespace memoe {

void rmsnorm_forward(const float* x, const float* g, float eps, int64_t n, int64_t d, float* y, float* rstd) {
#pragma omp parallel for schedule(static) if (n * d > 16384)
  for (int64_t i = 0; i < n; ++i) {
    const float* xi = x + i * d;
    float* yi = y + i * d;
    double ss = 0.0;
    for (int64_t j = 0; j < d; ++j) ss += double(xi[j]) * xi[j];
    float r = float(1.0 / std::sqrt(ss / double(d) + double(eps)));
    for (int64_t j = 0; j < d; ++j) yi[j] = xi[j] * r * g[j];
    if (rstd) rstd[i] = r;
  }
}

void rmsnorm_backward(const float* dy, const float* x, const float* g, const float* rstd, int64_t n, int64_t d,
                      float* dx, float* dg) {
  // Rows [begin, end): dx in place, and their dg terms added into dg_part.
  auto rows = [=](int64_t begin, int64_t end, float* dg_part) {
    for (int64_t i = begin; i < end; ++i) {
      const float* xi = x + i * d;
      const float* dyi = dy + i * d;
      float* dxi = dx + i * d;
      const float r = rstd[i];
      double dot = 0.0;  // sum_j dy_j g_j x_j
      for (int64_t j = 0; j < d; ++j) dot += double(dyi[j]) * g[j] * xi[j];
      const float c = float(dot / double(d)) * r * r * r;
      for (int64_t j = 0; j < d; ++j) dxi[j] += dyi[j] * g[j] * r - xi[j] * c;
      if (dg_part)
        for (int64_t j = 0; j < d; ++j) dg_part[j] += dyi[j] * xi[j] * r;
    }
  };
  const bool parallel = n * d > 16384;
  if (dg) {
    chunked_row_sum(n, d, parallel, dg, rows);  // dg summed in fixed chunks: thread-count independent
    return;
  }
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t i = 0; i < n; ++i) rows(i, i + 1, nullptr);
}

}  // namespace memoe
