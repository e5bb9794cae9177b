// AdamW over a model's parameters, each as its declared role says
// (model/params.h): decoupled decay on matrices only, the Engram tables
// updated sparsely — only the rows a step read — at their own learning rate
// (spec §5.5), the router's correction bias left to its balancing rule.
#pragma once
#include <vector>

#include "model/model.h"

namespace memoe {

struct AdamWConfig {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
};

class AdamW {
 public:
  AdamW(const Model& model, AdamWConfig cfg);

  // One update with learning rate lr; grads as filled by model_loss_and_grad.
  // Engram table rows use "lazy" Adam: a row's moments advance only on the
  // steps that touch it, with the global bias correction.
  void step(Model& model, ModelParams& grads, double lr);

  int64_t steps() const { return step_; }
  void set_steps(int64_t steps) { step_ = steps; }  // when restoring the moments
  ModelParams& first_moment() { return m_; }
  ModelParams& second_moment() { return v_; }

 private:
  AdamWConfig cfg_;
  ModelParams m_, v_;  // shaped like the parameters, Engram tables included
  int64_t step_ = 0;
};

// After an optimizer step: the aux-loss-free balancing of spec §4,
// bias_e += gamma * sign(mean load - load_e), per MoE layer.
void update_router_biases(Model& model, const std::vector<std::vector<int64_t>>& loads_per_layer);

}  // namespace memoe
