#include "kernels/mla_kv.h"

#include <cstring>

namespace memoe {

void mla_expand_kv(const float* kv, const float* kpe, int64_t n, int64_t heads, int64_t nope, int64_t rope,
                   int64_t v_dim, float* k, float* v) {
  const int64_t dqk = nope + rope, dkv = nope + v_dim;
#pragma omp parallel for schedule(static) if (n * heads * dqk > 65536)
  for (int64_t i = 0; i < n; ++i)
    for (int64_t h = 0; h < heads; ++h) {
      const float* src = kv + (i * heads + h) * dkv;
      float* ki = k + (i * heads + h) * dqk;
      std::memcpy(ki, src, sizeof(float) * size_t(nope));
      std::memcpy(ki + nope, kpe + i * rope, sizeof(float) * size_t(rope));
      std::memcpy(v + (i * heads + h) * v_dim, src + nope, sizeof(float) * size_t(v_dim));
    }
}

void mla_expand_kv_backward(const float* dk, const float* dv, int64_t n, int64_t heads, int64_t nope, int64_t rope,
                            int64_t v_dim, float* dkv, float* dkpe, int64_t dkpe_ld) {
  const int64_t dqk = nope + rope, dkv_w = nope + v_dim;
#pragma omp parallel for schedule(static) if (n * heads * dqk > 65536)
  for (int64_t i = 0; i < n; ++i) {
    float* dpe = dkpe + i * dkpe_ld;
    for (int64_t h = 0; h < heads; ++h) {
      const float* k = dk + (i * heads + h) * dqk;
      float* dst = dkv + (i * heads + h) * dkv_w;
      std::memcpy(dst, k, sizeof(float) * size_t(nope));
      std::memcpy(dst + nope, dv + (i * heads + h) * v_dim, sizeof(float) * size_t(v_dim));
      for (int64_t j = 0; j < rope; ++j) dpe[j] += k[nope + j];
    }
  }
}

}  // namespace memoe
