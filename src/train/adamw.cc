#include "train/adamw.h"

#include <cmath>

namespace memoe {

namespace {

std::vector<Tensor*> tensors_of(ModelParams& p) {
  std::vector<Tensor*> out;
  p.visit([&](const std::string&, Tensor& t) { out.push_back(&t); });
  return out;
}

// One contiguous run of elements; callers parallelise over runs.
void adamw_update(float* w, const float* g, float* m, float* v, int64_t n, float lr, float b1, float b2, float eps,
                  float decay, float bc1, float bc2) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    m[i] = b1 * m[i] + (1 - b1) * g[i];
    v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
    const float mhat = m[i] / bc1, vhat = v[i] / bc2;
    w[i] -= lr * (mhat / (std::sqrt(vhat) + eps) + decay * w[i]);
  }
}

}  // namespace

AdamW::AdamW(const Model& model, AdamWConfig cfg) : cfg_(cfg) {
  m_.allocate(model.config, model.engram_rows(), false);
  v_.allocate(model.config, model.engram_rows(), false);
}

void AdamW::step(Model& model, ModelParams& grads, double lr) {
  ++step_;
  const float b1 = float(cfg_.beta1), b2 = float(cfg_.beta2), eps = float(cfg_.eps);
  const float bc1 = float(1.0 - std::pow(cfg_.beta1, double(step_)));
  const float bc2 = float(1.0 - std::pow(cfg_.beta2, double(step_)));

  // Dense tensors: the gradient struct holds them in the same visit order.
  std::vector<std::string> names;
  std::vector<Tensor*> w;
  model.params.visit([&](const std::string& name, Tensor& t) {
    if (name.find(".engram.embedding.") != std::string::npos) return;  // sparse, below
    names.push_back(name);
    w.push_back(&t);
  });
  std::vector<Tensor*> g = tensors_of(grads), m, v;
  m_.visit([&](const std::string& name, Tensor& t) {
    if (name.find(".engram.embedding.") == std::string::npos) m.push_back(&t);
  });
  v_.visit([&](const std::string& name, Tensor& t) {
    if (name.find(".engram.embedding.") == std::string::npos) v.push_back(&t);
  });
  // Many tensors are small (one expert's matrix), so the threads share
  // fixed-size runs across all tensors rather than splitting each tensor.
  constexpr int64_t kRun = 16384;
  struct Run {
    size_t tensor;
    int64_t begin, count;
  };
  std::vector<Run> runs;
  for (size_t i = 0; i < w.size(); ++i)
    for (int64_t b = 0; b < w[i]->numel(); b += kRun) runs.push_back({i, b, std::min(kRun, w[i]->numel() - b)});
#pragma omp parallel for schedule(dynamic, 8)
  for (size_t r = 0; r < runs.size(); ++r) {
    const Run& run = runs[r];
    const size_t i = run.tensor;
    // Matrices decay; vectors (norm scales, biases) do not.
    const float decay = w[i]->ndim() >= 2 ? float(cfg_.weight_decay) : 0.0f;
    adamw_update(w[i]->data() + run.begin, g[i]->data() + run.begin, m[i]->data() + run.begin,
                 v[i]->data() + run.begin, run.count, float(lr), b1, b2, eps, decay, bc1, bc2);
  }

  // Engram tables: only the rows that were read, no decay, their own rate.
  if (!model.config.engram) return;
  const float table_lr = float(lr * model.config.engram->table_lr_mult);
  for (size_t l = 0; l < model.params.layers.size(); ++l) {
    LayerParams& p = model.params.layers[l];
    if (!p.has_engram) continue;
    const SparseRowGrad& sg = grads.layers[l].engram.embedding_grad;
    const int64_t D = sg.row_width;
    float* table = p.engram.embedding.data();
    float* tm = m_.layers[l].engram.embedding.data();
    float* tv = v_.layers[l].engram.embedding.data();
#pragma omp parallel for schedule(static) if (sg.rows.size() > 1024)
    for (size_t r = 0; r < sg.rows.size(); ++r) {
      const int64_t off = sg.rows[r] * D;
      adamw_update(table + off, sg.grad.data() + r * size_t(D), tm + off, tv + off, D, table_lr, b1, b2, eps, 0.0f,
                   bc1, bc2);
    }
  }
}

void update_router_biases(Model& model, const std::vector<std::vector<int64_t>>& loads_per_layer) {
  for (size_t l = 0; l < model.params.layers.size() && l < loads_per_layer.size(); ++l) {
    LayerParams& p = model.params.layers[l];
    if (p.is_moe && !loads_per_layer[l].empty())
      update_correction_bias(loads_per_layer[l], model.config.bias_update_speed, p.moe.e_score_correction_bias);
  }
}

}  // namespace memoe
