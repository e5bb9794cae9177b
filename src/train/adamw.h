// AdamW over a model's parameters, each as its declared role says
// (model/params.h): decoupled decay on matrices only, the Engram tables
// updated sparsely — only the rows a step read — at their own learning rate
// (spec §5.5), the router's correction bias left to its balancing rule.
//
// The optimizer owns slices of the parameters (model/params.h ParamSlice):
// it keeps moments for those elements only and updates only them. One
// process owns every parameter whole; under ZeRO-1 each data-parallel rank
// owns one shard and the updated weights are gathered afterwards
// (parallel/data_parallel.h). The arithmetic is element-wise, so a shard's
// update is bit for bit the whole update's restricted to the shard.
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

// Every parameter whole, in visit order: what one process owns.
std::vector<ParamSlice> whole_parameters(ModelParams& params);

class AdamW {
 public:
  // Moments for every element of every parameter.
  AdamW(const Model& model, AdamWConfig cfg);
  // Moments for `owned` only: slices of the model's parameters, in their
  // visit order, at most one per parameter (a table's in whole rows).
  AdamW(const Model& model, AdamWConfig cfg, std::vector<ParamSlice> owned);

  // One update with learning rate lr of the owned elements; grads as filled
  // by model_loss_and_grad (only their owned elements are read). Engram
  // table rows use "lazy" Adam: a row's moments advance only on the steps
  // that touch it, with the global bias correction.
  void step(Model& model, ModelParams& grads, double lr);

  int64_t steps() const { return step_; }
  void set_steps(int64_t steps) { step_ = steps; }  // when restoring the moments

  struct Moments {
    ParamSlice slice;
    std::vector<float, ZeroedAllocator<float>> m, v;  // slice.size() each: exp_avg, exp_avg_sq
  };
  std::vector<Moments>& moments() { return moments_; }
  const std::vector<Moments>& moments() const { return moments_; }
  // Bytes of optimizer state this instance holds (both moments).
  int64_t state_bytes() const;

 private:
  AdamWConfig cfg_;
  std::vector<Moments> moments_;  // in the parameters' visit order
  int64_t step_ = 0;
};

// After an optimizer step: the aux-loss-free balancing of spec §4,
// bias_e += gamma * sign(mean load - load_e), per MoE layer.
void update_router_biases(Model& model, const std::vector<std::vector<int64_t>>& loads_per_layer);

}  // namespace memoe
