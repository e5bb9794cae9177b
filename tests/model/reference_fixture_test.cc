// The engine against the independent PyTorch reference (reference/): logits,
// loss and every parameter gradient of committed fixtures, at float32
// tolerance. The fixtures were computed in float64.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/npy.h"
#include "io/safetensors.h"
#include "model/checkpoint.h"

namespace memoe {
namespace {

std::string fixture_dir(const std::string& name) { return std::string(MEMOE_SOURCE_DIR) + "/tests/fixtures/" + name; }

class ReferenceFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(ReferenceFixture, LogitsLossAndGradientsMatch) {
  const std::string dir = fixture_dir(GetParam());
  Model m = load_model(dir);
  NpyArray ids_arr = read_npy(dir + "/ids.npy");
  ASSERT_EQ(ids_arr.shape.size(), 2u);
  const int64_t B = ids_arr.shape[0], L = ids_arr.shape[1], V = m.config.vocab_size;
  std::vector<int64_t> ids = ids_arr.to_i64();
  NpyArray expected_logits = read_npy(dir + "/logits.npy");
  ASSERT_EQ(expected_logits.shape, (std::vector<int64_t>{B, L, V}));
  std::ifstream in(dir + "/expected.json");
  const nlohmann::json expected = nlohmann::json::parse(in);

  ModelState state;
  ModelParams grads = m.make_gradients();
  const auto targets = next_token_targets(ids.data(), B, L);
  const double loss = model_loss_and_grad(m, ids.data(), targets.data(), B, L, state, &grads);
  EXPECT_NEAR(loss, expected["loss"].get<double>(), 1e-5);
  if (expected.contains("aux_loss")) {
    EXPECT_NEAR(state.aux_loss, expected["aux_loss"].get<double>(), 1e-5);
  }

  const Tensor ref = expected_logits.to_tensor();
  double max_err = 0;
  for (int64_t i = 0; i < ref.numel(); ++i) max_err = std::max(max_err, double(std::fabs(ref[i] - state.logits[i])));
  EXPECT_LT(max_err, 2e-5) << "max |logit - reference|";

  // Gradients: every float tensor; the Engram tables from their sparse rows.
  SafetensorsFile ref_grads = SafetensorsFile::open(dir + "/grads.safetensors");
  int compared = 0;
  auto compare = [&](const std::string& name, const Tensor& ours) {
    ASSERT_TRUE(ref_grads.has(name)) << name;
    Tensor want = ref_grads.read_f32(name);
    ASSERT_EQ(want.numel(), ours.numel()) << name;
    double scale = 0, err = 0;
    for (int64_t i = 0; i < want.numel(); ++i) {
      scale = std::max(scale, double(std::fabs(want[i])));
      err = std::max(err, double(std::fabs(want[i] - ours[i])));
    }
    EXPECT_LE(err, 1e-6 + 2e-4 * scale) << name << " (max |ref| " << scale << ")";
    ++compared;
  };
  grads.visit([&](const std::string& name, Tensor& g) { compare(name, g); });
  for (size_t l = 0; l < grads.layers.size(); ++l) {
    const LayerParams& gl = grads.layers[l];
    if (!gl.has_engram) continue;
    const SparseRowGrad& sg = gl.engram.embedding_grad;
    Tensor dense(m.params.layers[l].engram.embedding.shape());
    for (size_t r = 0; r < sg.rows.size(); ++r)
      for (int64_t j = 0; j < sg.row_width; ++j)
        dense[sg.rows[r] * sg.row_width + j] = sg.grad[r * size_t(sg.row_width) + size_t(j)];
    compare("model.layers." + std::to_string(l) + ".engram.embedding.weight", dense);
  }
  EXPECT_GT(compared, 20);
}

// mla_long crosses two 64-token attention tiles (the fixtures of 16 tokens
// fit in one); mla_aux_loss has the sequence-wise balance loss on, large
// enough that leaving it out (or its gradient) fails the match above.
TEST(ReferenceFixtures, CoverLongSequencesAndTheBalanceLoss) {
  NpyArray ids = read_npy(fixture_dir("mla_long") + "/ids.npy");
  ASSERT_EQ(ids.shape.size(), 2u);
  EXPECT_GT(ids.shape[1], 2 * 64);
  const Model m = load_model(fixture_dir("mla_aux_loss"));
  EXPECT_GT(m.config.seq_aux_loss_alpha, 0.0);
  std::ifstream in(fixture_dir("mla_aux_loss") + "/expected.json");
  EXPECT_GT(nlohmann::json::parse(in).at("aux_loss").get<double>(), 0.1);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ReferenceFixture,
                         ::testing::Values("mla_moe_engram", "gqa_softmax_engram", "mla_noq", "mla_long",
                                           "mla_aux_loss"));

}  // namespace
}  // namespace memoe
