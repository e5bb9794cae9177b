#include "train/gradients.h"

#include <cmath>

#include "kernels/elementwise.h"
#include "kernels/reduce.h"

namespace memoe {

// Tensors are visited in a fixed order and each sum_squares is chunked, so
// the norm is the same for any thread count.
double gradient_global_norm(ModelParams& grads, GradientNormTerms* terms) {
  double total = 0.0;
  grads.visit([&](const std::string&, Tensor& g) {
    const double x = sum_squares(g.data(), g.numel());
    total += x;
    if (terms) terms->dense.push_back(x);
  });
  for (const LayerParams& l : grads.layers) {
    if (!l.has_engram) continue;  // adds 0.0 otherwise: a no-op on the sum
    const double x = sum_squares(l.engram.embedding_grad.grad.data(), int64_t(l.engram.embedding_grad.grad.size()));
    total += x;
    if (terms) terms->rows.push_back(x);
  }
  return std::sqrt(total);
}

void scale_gradients(ModelParams& grads, float factor) {
  grads.visit([&](const std::string&, Tensor& g) { scale_in_place(g.data(), g.numel(), factor); });
  for (LayerParams& l : grads.layers)
    scale_in_place(l.engram.embedding_grad.grad.data(), int64_t(l.engram.embedding_grad.grad.size()), factor);
}

}  // namespace memoe
