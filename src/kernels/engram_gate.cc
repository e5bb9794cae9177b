#include "kernels/engram_gate.h"

#include <algorithm>
#include <cmath>

#include "kernels/activation.h"

namespace memoe {

namespace {
constexpr float kGateFloor = 1e-6f;  // |s| floor under the signed square root
}  // namespace

void engram_gate_forward(const float* key, const float* query, int64_t n, int64_t d, float* score, float* alpha) {
  const float inv_sqrt_d = float(1.0 / std::sqrt(double(d)));
#pragma omp parallel for schedule(static) if (n * d > 65536)
  for (int64_t i = 0; i < n; ++i) {
    double dot = 0.0;
    for (int64_t j = 0; j < d; ++j) dot += double(key[i * d + j]) * query[i * d + j];
    const float s = float(dot) * inv_sqrt_d;
    float signed_root = std::copysign(std::sqrt(std::max(std::fabs(s), kGateFloor)), s);
    if (s == 0.0f) signed_root = 0.0f;  // sign(0) = 0
    score[i] = s;
    alpha[i] = sigmoidf(signed_root);
  }
}

void engram_gate_backward(const float* du, const float* value, const float* key, const float* query,
                          const float* score, const float* alpha, int64_t n, int64_t d, float* dvalue, float* dkey,
                          float* dquery) {
  const float inv_sqrt_d = float(1.0 / std::sqrt(double(d)));
#pragma omp parallel for schedule(static) if (n * d > 65536)
  for (int64_t i = 0; i < n; ++i) {
    double dalpha = 0.0;
    for (int64_t j = 0; j < d; ++j) {
      dalpha += double(du[i * d + j]) * value[i * d + j];
      dvalue[i * d + j] = du[i * d + j] * alpha[i];
    }
    const float a = alpha[i], s = score[i];
    const float dsigned_root = float(dalpha) * a * (1.0f - a);
    // d signed_sqrt / ds = 1 / (2 sqrt|s|) above the floor, 0 under it.
    const float ds = std::fabs(s) > kGateFloor ? dsigned_root / (2.0f * std::sqrt(std::fabs(s))) : 0.0f;
    for (int64_t j = 0; j < d; ++j) {
      dkey[i * d + j] = ds * inv_sqrt_d * query[i * d + j];
      dquery[i * d + j] = ds * inv_sqrt_d * key[i * d + j];
    }
  }
}

}  // namespace memoe
