// AdamW: each parameter as its declared role says — decoupled decay on
// matrices only, Engram table rows updated sparsely (rows no step read never
// change), the router bias left alone — and gradients and moments paired
// with their weights by name and shape.
#include "train/adamw.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "core/error.h"
#include "model/init.h"
#include "train/gradients.h"

namespace memoe {
namespace {

Model tiny_model() {
  return init_model(load_config(std::string(MEMOE_SOURCE_DIR) + "/configs/tiny.json"), 3);
}

TEST(AdamW, ZeroGradientDecaysMatricesOnly) {
  Model m = tiny_model();
  Model before = m;
  ModelParams g = m.make_gradients();
  AdamWConfig cfg;
  cfg.weight_decay = 0.5;
  AdamW opt(m, cfg);
  opt.step(m, g, 0.1);
  const float w0 = before.params.layers[0].attn.o_proj[5];
  EXPECT_FLOAT_EQ(m.params.layers[0].attn.o_proj[5], w0 - 0.1f * 0.5f * w0);
  EXPECT_EQ(m.params.norm[0], before.params.norm[0]);                            // a norm scale
  EXPECT_EQ(m.params.layers[1].engram.value_bias[0], before.params.layers[1].engram.value_bias[0]);  // a bias
  // Tables: no decay, and nothing was read.
  const Tensor& t0 = before.params.layers[1].engram.embedding;
  const Tensor& t1 = m.params.layers[1].engram.embedding;
  for (int64_t i = 0; i < t0.numel(); ++i) ASSERT_EQ(t0[i], t1[i]);
}

TEST(AdamW, ShortConvAndRouterBiasAreNotDecayed) {
  Model m = tiny_model();
  Tensor& conv = m.params.layers[1].engram.conv_weight;
  for (int64_t i = 0; i < conv.numel(); ++i) conv[i] = 0.25f;
  MoEParams* moe = nullptr;
  for (LayerParams& l : m.params.layers)
    if (l.is_moe) moe = &l.moe;
  ASSERT_NE(moe, nullptr);
  moe->e_score_correction_bias[0] = 0.5f;
  ModelParams g = m.make_gradients();
  g.layers[1].engram.conv_weight[0] = 1.0f;  // moves by the Adam step only
  AdamWConfig cfg;
  cfg.weight_decay = 0.5;
  AdamW opt(m, cfg);
  opt.step(m, g, 0.1);
  EXPECT_EQ(conv[1], 0.25f);  // zero gradient, no decay
  EXPECT_NEAR(conv[0], 0.25f - 0.1f, 1e-6f);
  EXPECT_EQ(moe->e_score_correction_bias[0], 0.5f);
}

TEST(AdamW, RolesAreDeclaredForEveryParameter) {
  Model m = tiny_model();
  std::map<std::string, ParamRole> roles;
  m.params.visit([&](const std::string& name, Tensor&, const ParamRole& role) { roles.emplace(name, role); });
  auto ends = [](const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  int tables = 0, decayed = 0;
  for (const auto& [name, role] : roles) {
    const bool norm = name.find("norm") != std::string::npos;
    const bool bias = ends(name, "bias");
    const bool conv = ends(name, "conv.weight");
    const bool table = ends(name, "engram.embedding.weight");
    EXPECT_EQ(role.weight_decay, !(norm || bias || conv || table)) << name;
    EXPECT_EQ(role.update == ParamUpdate::SparseRows, table) << name;
    EXPECT_EQ(role.lr == LrScale::EngramTable, table) << name;
    EXPECT_EQ(role.update == ParamUpdate::RouterBias, ends(name, "e_score_correction_bias")) << name;
    if (norm) {
      EXPECT_EQ(role.init, ParamInit::Ones) << name;
    }
    if (bias || conv) {
      EXPECT_EQ(role.init, ParamInit::Zeros) << name;
    }
    if (ends(name, "o_proj.weight") || ends(name, "down_proj.weight")) {
      EXPECT_EQ(role.init, ParamInit::OutputNormal) << name;
    }
    tables += table;
    decayed += role.weight_decay;
  }
  EXPECT_EQ(tables, 1);
  EXPECT_GT(decayed, 10);
}

TEST(AdamW, InitFollowsRoles) {
  const Model m = tiny_model();
  const_cast<ModelParams&>(m.params).visit([&](const std::string& name, Tensor& t, const ParamRole& role) {
    double sum_sq = 0;
    for (int64_t i = 0; i < t.numel(); ++i) {
      if (role.init == ParamInit::Ones) {
        ASSERT_EQ(t[i], 1.0f) << name;
      }
      if (role.init == ParamInit::Zeros) {
        ASSERT_EQ(t[i], 0.0f) << name;
      }
      sum_sq += double(t[i]) * t[i];
    }
    if (role.init == ParamInit::Normal && t.numel() > 200) {
      EXPECT_NEAR(std::sqrt(sum_sq / double(t.numel())), 0.02, 0.004) << name;
    }
  });
}

TEST(AdamW, GradientsAndMomentsMustMatchTheirWeights) {
  Model m = tiny_model();
  AdamW opt(m, AdamWConfig{});
  {
    ModelParams g = m.make_gradients();
    g.norm.resize({3});  // wrong shape
    EXPECT_THROW(opt.step(m, g, 1e-3), Error);
  }
  {
    ModelParams g = m.make_gradients();
    ASSERT_FALSE(m.params.lm_head.empty());
    g.lm_head = Tensor();  // a weight without its gradient
    EXPECT_THROW(opt.step(m, g, 1e-3), Error);
  }
  {
    ModelParams g = m.make_gradients();
    g.layers[1].engram.embedding_grad.rows = {m.params.layers[1].engram.embedding.dim(0)};  // past the table
    g.layers[1].engram.embedding_grad.grad.assign(size_t(g.layers[1].engram.embedding_grad.row_width), 1.0f);
    EXPECT_THROW(opt.step(m, g, 1e-3), Error);
  }
  opt.moments().back().m.resize(2);  // moments that no longer match their slice
  ModelParams g = m.make_gradients();
  EXPECT_THROW(opt.step(m, g, 1e-3), Error);
}

TEST(AdamW, OnlyTableRowsThatWereReadChange) {
  Model m = tiny_model();
  const Model before = m;
  ModelParams g = m.make_gradients();
  AdamW opt(m, AdamWConfig{});
  std::vector<int64_t> ids = {5, 9, 9, 13, 2, 40, 41, 7};
  const auto targets = next_token_targets(ids.data(), 1, 8);
  ModelState s;
  model_loss_and_grad(m, ids.data(), targets.data(), 1, 8, s, &g);
  const SparseRowGrad& sg = g.layers[1].engram.embedding_grad;
  ASSERT_FALSE(sg.rows.empty());
  opt.step(m, g, 1e-2);
  const Tensor& t0 = before.params.layers[1].engram.embedding;
  const Tensor& t1 = m.params.layers[1].engram.embedding;
  const int64_t D = sg.row_width;
  // Rows read only by the last position get a zero gradient (it has no
  // target), so they stay put as well.
  int changed = 0, with_gradient = 0;
  for (size_t r = 0; r < sg.rows.size(); ++r) {
    bool any = false;
    for (int64_t j = 0; j < D; ++j) any = any || sg.grad[r * size_t(D) + size_t(j)] != 0.0f;
    with_gradient += any;
  }
  for (int64_t row = 0; row < t0.dim(0); ++row) {
    const bool read = std::binary_search(sg.rows.begin(), sg.rows.end(), row);
    bool same = true;
    for (int64_t j = 0; j < D; ++j) same = same && t0[row * D + j] == t1[row * D + j];
    if (!read) {
      EXPECT_TRUE(same) << "row " << row << " was not read but changed";
    }
    changed += !same;
  }
  EXPECT_GT(with_gradient, 10);
  EXPECT_EQ(changed, with_gradient);
}

TEST(Gradients, GlobalNormCountsSparseRowsAndScales) {
  Model m = tiny_model();
  ModelParams g = m.make_gradients();
  g.norm[0] = 3.0f;
  g.layers[1].engram.embedding_grad.rows = {4};
  g.layers[1].engram.embedding_grad.grad.assign(size_t(g.layers[1].engram.embedding_grad.row_width), 0.0f);
  g.layers[1].engram.embedding_grad.grad[0] = 4.0f;
  EXPECT_DOUBLE_EQ(gradient_global_norm(g), 5.0);
  scale_gradients(g, 0.5f);
  EXPECT_DOUBLE_EQ(gradient_global_norm(g), 2.5);
}

}  // namespace
}  // namespace memoe
