#include "train/adamw.h"

#include <cmath>

#include "core/error.h"
#include "kernels/optimizer.h"

namespace memoe {

namespace {

struct Slot {
  std::string name;
  Tensor* tensor;
  ParamRole role;
};

std::vector<Slot> slots_of(ModelParams& p) {
  std::vector<Slot> out;
  p.visit([&](const std::string& name, Tensor& t, const ParamRole& role) { out.push_back({name, &t, role}); });
  return out;
}

// Optimizer state and gradients are paired with the weights by name and
// shape, never by position alone.
void check_pair(const Slot& weight, const Slot* other, const char* what) {
  MEMOE_CHECK(other != nullptr, "optimizer: no ", what, " for ", weight.name);
  MEMOE_CHECK(other->name == weight.name, "optimizer: ", what, " ", other->name, " does not match weight ",
              weight.name);
  MEMOE_CHECK(other->tensor->shape() == weight.tensor->shape(), "optimizer: ", what, " ", other->name, " has shape ",
              shape_string(other->tensor->shape()), ", the weight ", shape_string(weight.tensor->shape()));
}

}  // namespace

AdamW::AdamW(const Model& model, AdamWConfig cfg) : cfg_(cfg) {
  m_.allocate(model.config, model.engram_rows(), false);
  v_.allocate(model.config, model.engram_rows(), false);
}

void AdamW::step(Model& model, ModelParams& grads, double lr) {
  const std::vector<Slot> w = slots_of(model.params), g = slots_of(grads), m = slots_of(m_), v = slots_of(v_);
  MEMOE_CHECK(m.size() == w.size() && v.size() == w.size(), "optimizer: moments hold ", m.size(), " and ", v.size(),
              " tensors, the model ", w.size());
  std::vector<std::pair<std::string, SparseRowGrad*>> sparse;
  grads.visit_sparse_grads([&](const std::string& name, SparseRowGrad& sg) { sparse.emplace_back(name, &sg); });

  ++step_;
  // One step description per (decay, learning-rate scale).
  const double table_mult = model.config.engram ? model.config.engram->table_lr_mult : 1.0;
  AdamWStep steps[2][2];
  for (int decay = 0; decay < 2; ++decay)
    for (int scale = 0; scale < 2; ++scale)
      steps[decay][scale] = AdamWStep{float(lr * (scale ? table_mult : 1.0)),
                                      float(cfg_.beta1),
                                      float(cfg_.beta2),
                                      float(cfg_.eps),
                                      decay ? float(cfg_.weight_decay) : 0.0f,
                                      float(1.0 - std::pow(cfg_.beta1, double(step_))),
                                      float(1.0 - std::pow(cfg_.beta2, double(step_)))};
  auto step_for = [&](const ParamRole& role) {
    return &steps[role.weight_decay ? 1 : 0][role.lr == LrScale::EngramTable ? 1 : 0];
  };

  // Many tensors are small (one expert's matrix), so the threads share
  // fixed-size runs across all tensors rather than splitting each tensor.
  constexpr int64_t kRun = 16384;
  std::vector<AdamWRun> runs;
  size_t gi = 0, si = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    const Slot& weight = w[i];
    check_pair(weight, &m[i], "first moment");
    check_pair(weight, &v[i], "second moment");
    const AdamWStep* s = step_for(weight.role);
    if (weight.role.update == ParamUpdate::SparseRows) {
      // Only the rows this step read: lazy Adam with the global bias correction.
      MEMOE_CHECK(si < sparse.size() && sparse[si].first == weight.name, "optimizer: no sparse gradient for ",
                  weight.name);
      MEMOE_CHECK(gi >= g.size() || g[gi].name != weight.name, "optimizer: gradient of ", weight.name,
                  " must be sparse rows, not dense");
      const SparseRowGrad& sg = *sparse[si++].second;
      const int64_t rows = weight.tensor->dim(0), D = weight.tensor->numel() / std::max<int64_t>(rows, 1);
      MEMOE_CHECK(sg.row_width == D && sg.grad.size() == sg.rows.size() * size_t(D), "optimizer: sparse gradient of ",
                  weight.name, " does not have rows of width ", D);
      for (size_t r = 0; r < sg.rows.size(); ++r) {
        const int64_t row = sg.rows[r];
        MEMOE_CHECK(row >= 0 && row < rows, "optimizer: sparse gradient of ", weight.name, " names row ", row,
                    " of ", rows);
        runs.push_back({weight.tensor->data() + row * D, sg.grad.data() + r * size_t(D),
                        m[i].tensor->data() + row * D, v[i].tensor->data() + row * D, D, s});
      }
      continue;
    }
    check_pair(weight, gi < g.size() ? &g[gi] : nullptr, "gradient");
    const Slot& grad = g[gi++];
    if (weight.role.update != ParamUpdate::Dense) continue;  // the router bias: its own rule, after the step
    for (int64_t b = 0; b < weight.tensor->numel(); b += kRun)
      runs.push_back({weight.tensor->data() + b, grad.tensor->data() + b, m[i].tensor->data() + b,
                      v[i].tensor->data() + b, std::min(kRun, weight.tensor->numel() - b), s});
  }
  MEMOE_CHECK(gi == g.size(), "optimizer: gradient ", gi < g.size() ? g[gi].name : "", " has no weight");
  MEMOE_CHECK(si == sparse.size(), "optimizer: sparse gradient ", si < sparse.size() ? sparse[si].first : "",
              " has no weight");
  adamw_update_runs(runs.data(), int64_t(runs.size()));
}

void update_router_biases(Model& model, const std::vector<std::vector<int64_t>>& loads_per_layer) {
  for (size_t l = 0; l < model.params.layers.size() && l < loads_per_layer.size(); ++l) {
    LayerParams& p = model.params.layers[l];
    if (p.is_moe && !loads_per_layer[l].empty())
      update_correction_bias(loads_per_layer[l], model.config.bias_update_speed, p.moe.e_score_correction_bias);
  }
}

}  // namespace memoe
