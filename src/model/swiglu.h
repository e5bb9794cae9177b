// SwiGLU feed-forward: down(silu(gate(x)) * up(x)). Used for the dense FFN
// layers, each routed expert and the fused shared experts.
#pragma once
#include <vector>

#include "kernels/linear.h"
#include "model/params.h"

namespace memoe {

struct SwiGLUParams {
  Tensor gate_proj;  // [F, d]
  Tensor up_proj;    // [F, d]
  Tensor down_proj;  // [d, F]
  // DeepSeek-V4's experts: the gate clamped from above at swiglu_limit and
  // the up projection both ways (0: no clamp), and the release's names w1
  // (gate), w3 (up), w2 (down).
  float limit = 0.0f;
  bool v4 = false;

  void allocate(int64_t d, int64_t f);
  void allocate_v4(int64_t d, int64_t f, float swiglu_limit);
  int64_t width() const { return gate_proj.empty() ? 0 : gate_proj.dim(0); }
  // prefix e.g. "model.layers.0.mlp."
  void visit(const std::string& prefix, const ParamVisitor& f);
};

// Activations kept for the backward pass, [n, F] each. h, read only by
// down_proj's products, is kept in bf16 (h_bf16) when down_proj has a bf16
// copy: exactly what those products would round it to, at half the bytes.
struct SwiGLUCache {
  Tensor a, b, h;
  std::vector<uint16_t> h_bf16;
  ActivationMatrix h_operand() const { return h_bf16.empty() ? ActivationMatrix(h.data()) : ActivationMatrix(h_bf16.data()); }
};

// y = SwiGLU(x) for n rows of width d; overwrites y.
void swiglu_ffn_forward(const SwiGLUParams& p, const float* x, int64_t n, SwiGLUCache& cache, float* y);
// Adds into grads and dx (the same x as the forward pass).
void swiglu_ffn_backward(const SwiGLUParams& p, const float* x, const SwiGLUCache& cache, const float* dy, int64_t n,
                         SwiGLUParams& grads, float* dx);

}  // namespace memoe
