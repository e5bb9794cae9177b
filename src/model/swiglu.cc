#include "model/swiglu.h"

#include "kernels/activation.h"
#include "kernels/linear.h"

namespace memoe {

void SwiGLUParams::allocate(int64_t d, int64_t f) {
  gate_proj.resize({f, d});
  up_proj.resize({f, d});
  down_proj.resize({d, f});
}

void SwiGLUParams::allocate_v4(int64_t d, int64_t f, float swiglu_limit) {
  allocate(d, f);
  limit = swiglu_limit;
  v4 = true;
}

void SwiGLUParams::visit(const std::string& prefix, const ParamVisitor& f) {
  if (v4) {
    f(prefix + "w1.weight", gate_proj, param_role::kMatrix);
    f(prefix + "w3.weight", up_proj, param_role::kMatrix);
    f(prefix + "w2.weight", down_proj, param_role::kOutputMatrix);
    return;
  }
  f(prefix + "gate_proj.weight", gate_proj, param_role::kMatrix);
  f(prefix + "up_proj.weight", up_proj, param_role::kMatrix);
  f(prefix + "down_proj.weight", down_proj, param_role::kOutputMatrix);
}

void swiglu_ffn_forward(const SwiGLUParams& p, const float* x, int64_t n, SwiGLUCache& cache, float* y) {
  const int64_t f = p.gate_proj.dim(0), d = p.gate_proj.dim(1);
  cache.a.ensure({n, f});
  cache.b.ensure({n, f});
  linear_forward(x, p.gate_proj, nullptr, n, d, f, cache.a.data());
  linear_forward(x, p.up_proj, nullptr, n, d, f, cache.b.data());
  if (p.down_proj.bf16()) {
    cache.h = Tensor();
    cache.h_bf16.resize(size_t(n * f));
    swiglu_forward_bf16(cache.a.data(), cache.b.data(), n * f, cache.h_bf16.data(), p.limit);
  } else {
    std::vector<uint16_t>().swap(cache.h_bf16);
    cache.h.ensure({n, f});
    swiglu_forward(cache.a.data(), cache.b.data(), n * f, cache.h.data(), p.limit);
  }
  linear_forward(cache.h_operand(), p.down_proj, nullptr, n, f, d, y);
}

void swiglu_ffn_backward(const SwiGLUParams& p, const float* x, const SwiGLUCache& cache, const float* dy, int64_t n,
                         SwiGLUParams& grads, float* dx) {
  const int64_t f = p.gate_proj.dim(0), d = p.gate_proj.dim(1);
  Tensor dh({n, f}), da({n, f}), db({n, f});
  linear_backward(dy, cache.h_operand(), p.down_proj, n, f, d, dh.data(), grads.down_proj.data(), nullptr);
  swiglu_backward(dh.data(), cache.a.data(), cache.b.data(), n * f, da.data(), db.data(), p.limit);
  linear_backward(da.data(), x, p.gate_proj, n, d, f, dx, grads.gate_proj.data(), nullptr);
  linear_backward(db.data(), x, p.up_proj, n, d, f, dx, grads.up_proj.data(), nullptr);
}

}  // namespace memoe
