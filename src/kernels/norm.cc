#include "kernels/norm.h"

#include <omp.h>

#include <cmath>
#include <vector>

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
  int threads = (n * d > 16384) ? omp_get_max_threads() : 1;
  std::vector<float> dg_parts(dg ? size_t(threads) * size_t(d) : 0, 0.0f);
#pragma omp parallel num_threads(threads)
  {
    float* dg_local = dg ? dg_parts.data() + size_t(omp_get_thread_num()) * size_t(d) : nullptr;
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const float* xi = x + i * d;
      const float* dyi = dy + i * d;
      float* dxi = dx + i * d;
      float r = rstd[i];
      double dot = 0.0;  // sum_j dy_j g_j x_j
      for (int64_t j = 0; j < d; ++j) dot += double(dyi[j]) * g[j] * xi[j];
      float c = float(dot / double(d)) * r * r * r;
      for (int64_t j = 0; j < d; ++j) dxi[j] += dyi[j] * g[j] * r - xi[j] * c;
      if (dg_local)
        for (int64_t j = 0; j < d; ++j) dg_local[j] += dyi[j] * xi[j] * r;
    }
  }
  if (dg)
    for (int t = 0; t < threads; ++t)
      for (int64_t j = 0; j < d; ++j) dg[j] += dg_parts[size_t(t) * size_t(d) + size_t(j)];
}

}  // namespace memoe
