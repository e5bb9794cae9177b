// The engine's training step against PyTorch (reference/make_optimizer_fixture.py):
// torch.optim.AdamW on the dense weights, torch.optim.SparseAdam on the rows of
// the Engram tables a step read, the router bias update, clipping, the
// schedule and gradient accumulation; the loss, gradient norm and every
// parameter compared after every step.
//
// Tolerances. Loss 1e-5 and gradient norm 1e-5 relative (float32 against a
// float64 reference, as in reference_fixture_test). Parameters, coordinate by
// coordinate: 1e-6 + 1e-5·|w| (rounding over a few float32 steps) plus what
// Adam may legitimately make of float32 gradient noise. Adam divides by
// sqrt(v̂), so a gradient error δ moves a coordinate by about
// lr·δ / sqrt(v̂): negligible where the coordinate's gradient is of the
// tensor's scale, up to ~lr (a sign flip) where it is ~0. Each step adds
// lr·mult·min(3, kGradNoise·max|g| / (sqrt(v̂_i) + eps)) to coordinate i's
// allowance, with kGradNoise = 1e-5 (the engine's float32 gradients agree
// with float64 to ~1e-6 of the tensor's largest entry) and v̂ the engine's own
// second moment (v = 0, a structural zero gradient so far, gets none). A loose
// allowance (over 1e-4) may cover at most 5% of a tensor (one coordinate of a
// small one), so it cannot hide a wrong rule: a wrong beta or bias
// correction, decay on a tensor that takes none (or none where it is due, ~5e-4
// a step), a wrong table learning rate or a missed table row all move most
// coordinates of a tensor by far more than 1e-5.
// Measured: loss within 1e-7, gradient norm within 4e-7 relative, the largest
// parameter difference 5.8e-6 after 6 steps, the worst coordinate at ~30% of
// its tolerance; 12 of 8468 coordinates have a loose allowance. Each of these
// changes to src/train/adamw.cc fails at step 1 or 2: beta1 − 0.05, beta2 +
// 0.04, no bias correction (either), decay on everything, on nothing, on the
// tables, table_lr_mult ignored, one read row skipped, half the router gamma.
// Weight decay follows the rule of 2-D matrices only: the Engram short conv
// [C, 1, k] takes none (an engine that decays it fails at step 1 on
// model.layers.1.engram.short_conv.conv.weight).
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "io/npy.h"
#include "io/safetensors.h"
#include "model/checkpoint.h"
#include "train/adamw.h"
#include "train/gradients.h"
#include "train/schedule.h"

namespace memoe {
namespace {

const std::string kDir = std::string(MEMOE_SOURCE_DIR) + "/tests/fixtures/optimizer_adamw";
// float32 gradient error relative to the tensor's max |g|: the engine and the
// float64 reference agree to ~1e-6; at 1e-5 the worst coordinate uses ~30%
// of its tolerance, at 1e-6 nearly all of it.
constexpr double kGradNoise = 1e-5;
constexpr double kLoose = 1e-4;      // an allowance above this is "loose"

bool is_table(const std::string& name) { return name.find(".engram.embedding.") != std::string::npos; }

std::map<std::string, Tensor*> by_name(ModelParams& p) {
  std::map<std::string, Tensor*> out;
  p.visit([&](const std::string& name, Tensor& t) { out[name] = &t; });
  return out;
}

// Adds this step's allowance for each coordinate the optimizer updated.
void add_allowance(Model& m, ModelParams& grads, AdamW& opt, const AdamWConfig& cfg, int64_t step, double lr,
                   std::map<std::string, std::vector<double>>& allowance) {
  const double bc2 = 1.0 - std::pow(cfg.beta2, double(step + 1));
  const auto g = by_name(grads);
  for (AdamW::Moments& mo : opt.moments()) {
    const std::string& name = mo.slice.name;
    ASSERT_EQ(mo.slice.begin, 0) << name;  // one process: every parameter whole
    const auto* v = &mo.v;
    std::vector<double>& a = allowance[name];
    a.resize(v->size(), 0.0);
    auto add = [&](int64_t i, double gmax, double mult) {
      // v = 0: no gradient yet, which only a structural zero gives (a token
      // absent from every batch so far), the same in both: no allowance.
      if ((*v)[i] == 0.0f) return;
      const double denom = std::sqrt(double((*v)[i]) / bc2) + cfg.eps;
      a[size_t(i)] += lr * mult * std::min(3.0, kGradNoise * gmax / denom);
    };
    if (!is_table(name)) {
      double gmax = 0;
      for (int64_t i = 0; i < int64_t(v->size()); ++i) gmax = std::max(gmax, double(std::fabs((*g.at(name))[i])));
      for (int64_t i = 0; i < int64_t(v->size()); ++i) add(i, gmax, 1.0);
      continue;
    }
    const size_t layer = size_t(std::stoi(name.substr(std::string("model.layers.").size())));
    const SparseRowGrad& sg = grads.layers[layer].engram.embedding_grad;
    double gmax = 0;
    for (float x : sg.grad) gmax = std::max(gmax, double(std::fabs(x)));
    for (int64_t row : sg.rows)
      for (int64_t j = 0; j < sg.row_width; ++j) add(row * sg.row_width + j, gmax, m.config.engram->table_lr_mult);
  }
}

TEST(OptimizerFixture, TrainingStepsMatchPyTorchAdamWAndSparseAdam) {
  Model m = load_model(kDir);
  std::ifstream in(kDir + "/expected.json");
  const nlohmann::json x = nlohmann::json::parse(in);
  const NpyArray ids_arr = read_npy(kDir + "/ids.npy");
  ASSERT_EQ(ids_arr.shape.size(), 4u);
  const int64_t steps = ids_arr.shape[0], accum = ids_arr.shape[1], B = ids_arr.shape[2], L = ids_arr.shape[3];
  ASSERT_GE(steps, 5);
  const std::vector<int64_t> ids = ids_arr.to_i64(), targets = read_npy(kDir + "/targets.npy").to_i64();
  ASSERT_EQ(targets.size(), ids.size());

  AdamWConfig acfg;
  acfg.beta1 = x.at("beta1").get<double>();
  acfg.beta2 = x.at("beta2").get<double>();
  acfg.eps = x.at("eps").get<double>();
  acfg.weight_decay = x.at("weight_decay").get<double>();
  AdamW opt(m, acfg);
  const LrSchedule schedule{x.at("lr").get<double>(), x.at("warmup").get<int64_t>(), steps,
                            x.at("min_lr_ratio").get<double>()};
  const double clip = x.at("clip").get<double>();
  ASSERT_DOUBLE_EQ(m.config.engram->table_lr_mult, x.at("table_lr_mult").get<double>());
  ASSERT_DOUBLE_EQ(m.config.bias_update_speed, x.at("bias_update_speed").get<double>());

  ModelParams grads = m.make_gradients();
  ModelState state;
  std::map<std::string, std::vector<double>> allowance;
  for (int64_t step = 0; step < steps; ++step) {
    SCOPED_TRACE("step " + std::to_string(step + 1));
    const nlohmann::json& want = x.at("steps_record").at(size_t(step));

    // The step of train_loop (src/train/trainer.cc).
    grads.zero();
    std::vector<std::vector<int64_t>> loads(m.params.layers.size());
    double loss = 0;
    for (int64_t micro = 0; micro < accum; ++micro) {
      const size_t off = size_t((step * accum + micro) * B * L);
      loss += model_loss_and_grad(m, ids.data() + off, targets.data() + off, B, L, state, &grads);
      for (size_t l = 0; l < loads.size(); ++l) {
        const std::vector<int64_t>& load = state.layers[l].moe.expert_load;
        loads[l].resize(load.size(), 0);
        for (size_t e = 0; e < load.size(); ++e) loads[l][e] += load[e];
      }
    }
    loss /= double(accum);
    scale_gradients(grads, float(1.0 / double(accum)));
    const double norm = gradient_global_norm(grads);
    if (norm > clip) scale_gradients(grads, float(clip / norm));
    const double lr = schedule.at(step);
    opt.step(m, grads, lr);
    update_router_biases(m, loads);

    EXPECT_NEAR(loss, want.at("loss").get<double>(), 1e-5);
    EXPECT_NEAR(norm, want.at("grad_norm").get<double>(), 1e-5 * want.at("grad_norm").get<double>());
    EXPECT_EQ(norm > clip, want.at("clipped").get<bool>());
    EXPECT_NEAR(lr, want.at("lr").get<double>(), 1e-12);

    // Every parameter, the correction biases and the tables included.
    add_allowance(m, grads, opt, acfg, step, lr, allowance);
    const SafetensorsFile ref = SafetensorsFile::open(kDir + "/step_" + std::to_string(step + 1) + ".safetensors");
    int compared = 0;
    m.params.visit([&](const std::string& name, Tensor& w) {
      ASSERT_TRUE(ref.has(name)) << name;
      const Tensor r = ref.read_f32(name);
      ASSERT_EQ(r.numel(), w.numel()) << name;
      const std::vector<double>& a = allowance[name];
      int bad = 0;
      int64_t loose = 0;
      for (int64_t i = 0; i < w.numel(); ++i) {
        const double extra = a.empty() ? 0.0 : a[size_t(i)];
        loose += extra > kLoose;
        const double err = std::fabs(double(w[i]) - double(r[i]));
        if (err > 1e-6 + 1e-5 * std::fabs(double(r[i])) + extra && bad++ < 3)
          ADD_FAILURE() << name << "[" << i << "]: engine " << w[i] << ", PyTorch " << r[i] << " (allowance "
                        << extra << ")";
      }
      EXPECT_LE(loose, std::max<int64_t>(1, w.numel() / 20)) << name << ": too many coordinates with a loose allowance";
      ++compared;
    });
    EXPECT_EQ(compared, int(ref.names().size()));
    if (HasFailure()) return;  // later steps inherit the difference; the first step that differs says it all
  }
}

}  // namespace
}  // namespace memoe
