// The planner's figures against hand computations from the formulas of
// docs/distributed.md, on the tiny preset (3 layers: layer 0 dense, 1 and 2
// MoE with 8 experts of width 16, top 2; Engram at layer 1; d = 32).
#include "parallel/plan.h"

#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "model/param_count.h"

namespace memoe {
namespace {

ModelConfig tiny() { return load_config(std::string(MEMOE_SOURCE_DIR) + "/configs/tiny.json"); }

PlanSettings settings(int64_t devices) {
  PlanSettings s;
  s.devices = devices;
  s.device = {"test", 1.0, 100.0, 100.0, 10.0, 8, ""};
  s.mfu = 0.5;
  s.seq_len = 32;
  s.global_batch = 16;
  s.micro_batch = 1;
  s.tokens = 1e9;
  return s;
}

TEST(Plan, OneStageHoldsEveryWeightAndShardsTheOptimizer) {
  const ModelConfig cfg = tiny();
  const ParamCount pc = count_params(cfg, 32);
  const double weights = double(pc.total - pc.engram_table), tables = double(pc.engram_table);
  const PlanResult r = plan_layout(cfg, settings(4), {4, 1, 1, false, EngramPlacement::device});
  EXPECT_DOUBLE_EQ(r.memory.weights, 2 * weights);
  EXPECT_DOUBLE_EQ(r.memory.gradients, 4 * weights);
  EXPECT_NEAR(r.memory.optimizer, 12 * weights / 4, 1e-6);
  // Tables in bf16 on the device, their optimizer state over dp, plus one
  // micro-batch's rows (2 orders x 2 heads x 8 values a token, fp32).
  const double rank_tokens = 16.0 * 32 / 4, micro_batches = 16.0 / 4;
  const double step_rows = rank_tokens * 4 * 8;
  EXPECT_NEAR(r.memory.engram, 2 * tables + 12 * tables / 4 + 4 * step_rows / micro_batches, 1e-6);
  // dp 4: reduce-scatter and all-gather, each 3/4 of the bf16 gradients.
  EXPECT_NEAR(r.comm.data_parallel, 2 * 2 * 0.75 * weights, 1e-6);
  EXPECT_EQ(r.comm.expert_parallel, 0);
  EXPECT_EQ(r.comm.pipeline, 0);
  EXPECT_EQ(r.micro_batches, 4);
  EXPECT_EQ(r.bubble, 0);
}

TEST(Plan, ExpertParallelSplitsExpertsAndSendsTheRoutedTokens) {
  const ModelConfig cfg = tiny();
  const double expert = 3.0 * 32 * 16, routed = 2 * 8 * expert;
  const PlanResult one = plan_layout(cfg, settings(4), {4, 1, 1, false, EngramPlacement::device});
  const PlanResult two = plan_layout(cfg, settings(4), {4, 1, 2, false, EngramPlacement::device});
  EXPECT_NEAR(one.memory.weights - two.memory.weights, 2 * routed / 2, 1e-6);
  // Experts' optimizer state is sharded over the dp / ep = 2 ranks holding them.
  EXPECT_NEAR(two.memory.optimizer - (one.memory.optimizer - 12 * routed / 4), 12 * (routed / 2) / 2, 1e-6);
  // Dispatch and combine, forward and backward: 4 x 2 bytes x 128 tokens x
  // top 2 x d 32 x half leaving the rank x 2 MoE layers.
  EXPECT_NEAR(two.comm.expert_parallel, 4 * 2 * 128.0 * 2 * 32 * 0.5 * 2, 1e-6);
  const PlanResult again = plan_layout(cfg, settings(4), {4, 1, 2, true, EngramPlacement::device});
  EXPECT_NEAR(again.comm.expert_parallel, 6 * 2 * 128.0 * 2 * 32 * 0.5 * 2, 1e-6);  // recomputed forward
  // Experts' gradients are reduced over the 2 ranks holding them (1/2 of
  // them sent twice), the rest over all 4.
  EXPECT_NEAR(one.comm.data_parallel - two.comm.data_parallel, 2 * 2 * (0.75 * routed - 0.5 * routed / 2), 1e-6);
  // A token crosses the node at ep above 8 only; here the node's link.
  EXPECT_NEAR(two.comm_s, two.comm.data_parallel / 10e9 + two.comm.expert_parallel / 100e9, 1e-15);
}

TEST(Plan, PipelineStagesBubbleAndStepTime) {
  const ModelConfig cfg = tiny();
  const ParamCount pc = count_params(cfg, 32);
  const PlanResult r = plan_layout(cfg, settings(8), {4, 2, 1, false, EngramPlacement::device});
  EXPECT_EQ(r.micro_batches, 4);
  EXPECT_DOUBLE_EQ(r.bubble, 1.0 / 5.0);  // (p - 1) / (m + p - 1)
  // Each of the two stages sends its boundary once a step: 2 bytes x 128 tokens x d.
  EXPECT_DOUBLE_EQ(r.comm.pipeline, 2 * 128.0 * 32);
  const double flops = pc.train_flops_per_token * 16 * 32;
  EXPECT_NEAR(r.compute_s, flops / (8 * 100e12 * 0.5) / (1 - 0.2), 1e-18);
  EXPECT_DOUBLE_EQ(r.step_s, std::max(r.compute_s, r.comm_s));
  EXPECT_NEAR(r.device_hours, r.step_s * 8 * (1e9 / (16 * 32)) / 3600, 1e-9);
  // Recomputation costs a third more compute.
  const PlanResult re = plan_layout(cfg, settings(8), {4, 2, 1, true, EngramPlacement::device});
  EXPECT_NEAR(re.compute_s, r.compute_s * 4 / 3, 1e-18);
  EXPECT_LT(re.memory.activations, r.memory.activations);
}

TEST(Plan, ShardedOrHostTablesLeaveTheDevice) {
  const ModelConfig cfg = tiny();
  const double tables = double(count_params(cfg, 32).engram_table);
  const double step_rows = 128.0 * 4 * 8;
  const PlanResult host = plan_layout(cfg, settings(4), {4, 1, 1, false, EngramPlacement::host});
  const PlanResult sharded = plan_layout(cfg, settings(4), {4, 1, 1, false, EngramPlacement::sharded});
  EXPECT_NEAR(host.memory.engram, 4 * step_rows / 4, 1e-9);
  EXPECT_NEAR(sharded.memory.engram, 14 * tables / 4 + 4 * step_rows / 4, 1e-9);
  // Rows fetched and their gradients returned, 3/4 of them from other ranks.
  EXPECT_NEAR(sharded.comm.engram, 2 * 2 * step_rows * 0.75, 1e-9);
  EXPECT_EQ(host.comm.engram, 0);
}

TEST(Plan, CalibrationInvertsTheStepTimeAndBadLayoutsAreOneLine) {
  const ModelConfig cfg = tiny();
  PlanSettings s = settings(8);
  const Layout y{4, 2, 2, false, EngramPlacement::device};
  s.mfu = 0.37;
  // The tiny model's steps are bound by communication: no MFU follows.
  EXPECT_THROW(implied_mfu(cfg, s, y, plan_layout(cfg, s, y).device_hours), Error);
  s.device.link_gbps = s.device.inter_node_gbps = 1e9;  // now by compute
  const double hours = plan_layout(cfg, s, y).device_hours;
  EXPECT_NEAR(implied_mfu(cfg, s, y, hours), 0.37, 1e-6);
  EXPECT_THROW(implied_mfu(cfg, s, y, hours * 0.01), Error);  // faster than MFU 1 allows
  EXPECT_THROW(plan_layout(cfg, s, {4, 1, 1}), Error);        // 4 x 1 is not 8 devices
  EXPECT_THROW(plan_layout(cfg, s, {4, 2, 3}), Error);        // ep 3 divides neither
  EXPECT_THROW(plan_layout(cfg, s, {2, 4, 1}), Error);        // 4 stages of 3 layers
  s.global_batch = 6;
  EXPECT_THROW(plan_layout(cfg, s, {4, 2, 1}), Error);        // 6 sequences over 4 ranks
  EXPECT_THROW(device_preset("tpu"), Error);
}

TEST(Plan, LayoutsAreRankedAndNothingFittingIsSaid) {
  const ModelConfig cfg = tiny();
  PlanSettings s = settings(8);
  const std::vector<PlanResult> all = plan_all(cfg, s);
  ASSERT_FALSE(all.empty());
  for (size_t i = 1; i < all.size(); ++i) {
    EXPECT_FALSE(!all[i - 1].fits && all[i].fits) << "fitting layouts come first";
    if (all[i - 1].fits && all[i].fits) {
      EXPECT_LE(all[i - 1].step_s, all[i].step_s);
    }
  }
  // The 1T preset on 8 devices of 80 GB: nothing fits.
  PlanSettings big;
  big.devices = 8;
  big.device = device_preset("h800");
  big.global_batch = 64;
  const auto v4 = plan_all(load_config(std::string(MEMOE_SOURCE_DIR) + "/configs/v4-1t.json"), big);
  ASSERT_FALSE(v4.empty());
  EXPECT_FALSE(v4.front().fits);
  EXPECT_GT(v4.front().memory.total(), 80e9);
}

}  // namespace
}  // namespace memoe
