// DeepSeekMoE layer (spec §4): a sigmoid (or softmax) router with a
// selection-only correction bias and group-limited top-k, routed SwiGLU
// experts weighted by the router scores, plus always-on shared experts.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "io/config.h"
#include "kernels/moe_dispatch.h"
#include "model/params.h"
#include "model/swiglu.h"

namespace memoe {

struct MoEParams {
  Tensor gate;                     // [E, d]
  Tensor e_score_correction_bias;  // [E]; chooses experts, never weights them (its gradient stays zero)
  std::vector<SwiGLUParams> experts;  // E experts, each [F, d], [F, d], [d, F]
  SwiGLUParams shared;             // width n_shared_experts * F; empty when n_shared_experts == 0

  void allocate(const ModelConfig& cfg);
  // prefix e.g. "model.layers.3.mlp." -> gate.weight, gate.e_score_correction_bias,
  // experts.{j}.{gate,up,down}_proj.weight, shared_experts.{gate,up,down}_proj.weight.
  void visit(const std::string& prefix, const ParamVisitor& f);
};

// What the backward pass needs from the forward pass, plus the routing
// statistics the trainer reads.
struct MoECache {
  int64_t batch = 0, seq_len = 0;
  Tensor scores;                     // s [B*L, E]
  std::vector<int32_t> expert_ids;   // [B*L, k]
  std::vector<float> weights;        // w [B*L, k]
  ExpertGroups groups;               // (token, slot) pairs sorted by expert
  std::vector<SwiGLUCache> experts;  // per expert, over its grouped rows
  SwiGLUCache shared;
  std::vector<int64_t> expert_load;  // tokens routed to each expert: c_e of the bias update
  double aux_loss = 0.0;             // sequence-wise balance loss (0 unless seq_aux_loss_alpha > 0)
};

RouterSpec router_spec(const ModelConfig& cfg);

// y[B*L, d] = MoE(x[B*L, d]); overwrites y. Fills cache.
void moe_forward(const ModelConfig& cfg, const MoEParams& p, const float* x, int64_t batch, int64_t seq_len,
                 MoECache& cache, float* y);

// Adds into grads (allocated like p) and dx, given dy and the cache of the
// forward pass over the same x. Includes the balance loss's gradient (with an
// upstream gradient of 1) when cfg.seq_aux_loss_alpha > 0.
void moe_backward(const ModelConfig& cfg, const MoEParams& p, const float* x, const MoECache& cache, const float* dy,
                  int64_t batch, int64_t seq_len, MoEParams& grads, float* dx);

// Auxiliary-loss-free balancing, after an optimizer step: bias_e += gamma *
// sign(mean load - load_e), with load summed over the whole step.
void update_correction_bias(const std::vector<int64_t>& load, double gamma, Tensor& bias);

}  // namespace memoe
