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

std::vector<ParamSlice> whole_parameters(ModelParams& params) {
  std::vector<ParamSlice> out;
  params.visit([&](const std::string& name, Tensor& t) { out.push_back({name, 0, t.numel()}); });
  return out;
}

AdamW::AdamW(const Model& model, AdamWConfig cfg)
    : AdamW(model, cfg, whole_parameters(const_cast<ModelParams&>(model.params))) {}

AdamW::AdamW(const Model& model, AdamWConfig cfg, std::vector<ParamSlice> owned) : cfg_(cfg) {
  // Checked against the parameters here, so step() pairs them by position.
  size_t next = 0;
  const_cast<ModelParams&>(model.params).visit([&](const std::string& name, Tensor& t, const ParamRole& role) {
    if (next == owned.size() || owned[next].name != name) return;
    const ParamSlice& s = owned[next++];
    MEMOE_CHECK(0 <= s.begin && s.begin <= s.end && s.end <= t.numel(), "optimizer: slice [", s.begin, ":", s.end,
                "] of ", name, " lies outside its ", t.numel(), " values");
    if (role.update == ParamUpdate::SparseRows) {
      const int64_t width = t.numel() / std::max<int64_t>(t.dim(0), 1);
      MEMOE_CHECK(s.begin % width == 0 && s.end % width == 0, "optimizer: slice [", s.begin, ":", s.end, "] of ",
                  name, " is not whole rows of ", width);
    }
    Moments m{s, {}, {}};
    m.m.resize(size_t(s.size()));
    m.v.resize(size_t(s.size()));
    moments_.push_back(std::move(m));
  });
  MEMOE_CHECK(next == owned.size(), "optimizer: slice of ", next < owned.size() ? owned[next].name : "",
              " names no parameter, or is out of the parameters' order");
}

int64_t AdamW::state_bytes() const {
  int64_t bytes = 0;
  for (const Moments& m : moments_) bytes += int64_t((m.m.size() + m.v.size()) * sizeof(float));
  return bytes;
}

void AdamW::step(Model& model, ModelParams& grads, double lr) {
  const std::vector<Slot> w = slots_of(model.params), g = slots_of(grads);
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
  size_t gi = 0, si = 0, mi = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    const Slot& weight = w[i];
    Moments* mo = mi < moments_.size() && moments_[mi].slice.name == weight.name ? &moments_[mi++] : nullptr;
    if (mo)
      MEMOE_CHECK(int64_t(mo->m.size()) == mo->slice.size() && int64_t(mo->v.size()) == mo->slice.size() &&
                      mo->slice.end <= weight.tensor->numel(),
                  "optimizer: moments of ", weight.name, " do not match its slice [", mo->slice.begin, ":",
                  mo->slice.end, "]");
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
        if (!mo || row * D < mo->slice.begin || row * D >= mo->slice.end) continue;  // another rank's row
        const int64_t at = row * D - mo->slice.begin;
        runs.push_back({weight.tensor->data() + row * D, sg.grad.data() + r * size_t(D), mo->m.data() + at,
                        mo->v.data() + at, D, s});
      }
      continue;
    }
    check_pair(weight, gi < g.size() ? &g[gi] : nullptr, "gradient");
    const Slot& grad = g[gi++];
    if (weight.role.update != ParamUpdate::Dense || !mo) continue;  // the router bias: its own rule, after the step
    for (int64_t b = mo->slice.begin; b < mo->slice.end; b += kRun)
      runs.push_back({weight.tensor->data() + b, grad.tensor->data() + b, mo->m.data() + (b - mo->slice.begin),
                      mo->v.data() + (b - mo->slice.begin), std::min(kRun, mo->slice.end - b), s});
  }
  MEMOE_CHECK(mi == moments_.size(), "optimizer: moments of ", mi < moments_.size() ? moments_[mi].slice.name : "",
              " have no weight");
  MEMOE_CHECK(gi == g.size(), "optimizer: gradient ", gi < g.size() ? g[gi].name : "", " has no weight");
  MEMOE_CHECK(si == sparse.size(), "optimizer: sparse gradient ", si < sparse.size() ? sparse[si].first : "",
              " has no weight");
  adamw_update_runs(runs.data(), int64_t(runs.size()));
}

void update_router_biases(Model& model, const std::vector<std::vector<int64_t>>& loads_per_layer) {
  for (size_t l = 0; l < model.params.layers.size() && l < loads_per_layer.size(); ++l) {
    LayerParams& p = model.params.layers[l];
    // A token-routed layer (V4's first layers) has no bias: its routing is fixed.
    if (p.is_moe && !p.moe.routes_by_token() && !loads_per_layer[l].empty())
      update_correction_bias(loads_per_layer[l], model.config.bias_update_speed, p.moe.e_score_correction_bias);
  }
}

}  // namespace memoe
