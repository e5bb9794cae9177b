#include "train/gradients.h"

#include <cmath>

namespace memoe {

namespace {
double sum_squares(const float* x, int64_t n) {
  double s = 0.0;
#pragma omp parallel for reduction(+ : s) schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) s += double(x[i]) * double(x[i]);
  return s;
}
}  // namespace

double gradient_global_norm(ModelParams& grads) {
  double total = 0.0;
  grads.visit([&](const std::string&, Tensor& g) { total += sum_squares(g.data(), g.numel()); });
  for (const LayerParams& l : grads.layers)
    total += sum_squares(l.engram.embedding_grad.grad.data(), int64_t(l.engram.embedding_grad.grad.size()));
  return std::sqrt(total);
}

void scale_gradients(ModelParams& grads, float factor) {
  auto scale = [factor](float* x, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; ++i) x[i] *= factor;
  };
  grads.visit([&](const std::string&, Tensor& g) { scale(g.data(), g.numel()); });
  for (LayerParams& l : grads.layers)
    scale(l.engram.embedding_grad.grad.data(), int64_t(l.engram.embedding_grad.grad.size()));
}

}  // namespace memoe
