// Pipeline-parallel training (parallel/pipeline.h): the 1F1B schedule and the
// stage balance by hand, then PP x DP, PP x EP, PP 4 and tied embeddings
// over MPI against one process on the same global batch (1 thread a rank,
// 20 steps): every stage sums in one process's order, the norm's addends
// are added in its order too, so they agree bit for bit (the issue asks
// 1e-5); resumes across layouts; failures.
#include <set>

#include "core/error.h"
#include "parallel/pipeline.h"
#include "parallel_runs.h"

namespace memoe {
namespace {

TEST(PipelineSchedule, OneForwardOneBackwardKeepsAtMostTheStagesLeftInFlight) {
  for (int P : {1, 2, 3, 4})
    for (int m : {1, 2, 3, 4, 8})
      for (int s = 0; s < P; ++s) {
        const std::vector<PipeOp> ops = one_f_one_b(P, s, m);
        ASSERT_EQ(ops.size(), size_t(2 * m)) << P << " " << s << " " << m;
        std::set<int> in_flight;
        int next_forward = 0, next_backward = 0;
        size_t most = 0;
        for (const PipeOp& op : ops) {
          if (op.forward) {
            EXPECT_EQ(op.micro, next_forward++);  // forwards in order
            in_flight.insert(op.micro);
          } else {
            EXPECT_EQ(op.micro, next_backward++);  // backwards in order, each after its forward
            EXPECT_EQ(in_flight.erase(op.micro), 1u);
          }
          most = std::max(most, in_flight.size());
        }
        EXPECT_EQ(most, size_t(std::min(P - s, m))) << "P " << P << " stage " << s << " m " << m;
        // The warm-up: P - s - 1 forwards (at most m) before the first backward.
        size_t warm = 0;
        while (warm < ops.size() && ops[warm].forward) ++warm;
        EXPECT_EQ(warm, size_t(std::min(P - s, m)));
      }
  // Stage 0 of 2 over 3 micro-batches: F0 F1 B0 F2 B1 B2.
  const std::vector<PipeOp> ops = one_f_one_b(2, 0, 3);
  std::string order;
  for (const PipeOp& op : ops) order += (op.forward ? "F" : "B") + std::to_string(op.micro) + " ";
  EXPECT_EQ(order, "F0 F1 B0 F2 B1 B2 ");
  EXPECT_DOUBLE_EQ(ideal_bubble(4, 4), 3.0 / 7.0);
  EXPECT_DOUBLE_EQ(ideal_bubble(1, 4), 0.0);
}

TEST(PipelineStages, BalanceMinimisesTheMostExpensiveStage) {
  // Costs 1 4 1 1 1 + head 2: two stages best as [1 4] [1 1 1 +2] (5 | 5).
  EXPECT_EQ(balance_stages({1, 4, 1, 1, 1}, 2, 2), (StageCuts{0, 2, 5}));
  // Without the head: [1 4] [1 1 1] -> 5 | 3, and [1] [4 1 1 1] -> 1 | 7: the first.
  EXPECT_EQ(balance_stages({1, 4, 1, 1, 1}, 0, 2), (StageCuts{0, 2, 5}));
  EXPECT_EQ(balance_stages({1, 1, 1, 1}, 0, 4), (StageCuts{0, 1, 2, 3, 4}));
  EXPECT_EQ(balance_stages({3, 1, 1, 1, 3}, 0, 3), (StageCuts{0, 1, 4, 5}));
  EXPECT_EQ(balance_stages({5}, 9, 1), (StageCuts{0, 1}));
  EXPECT_THROW(balance_stages({1, 1}, 0, 3), Error);
  EXPECT_EQ(parse_stage_layers("2,1", 3, 2), (StageCuts{0, 2, 3}));
  EXPECT_THROW(parse_stage_layers("2,2", 3, 2), Error);
  EXPECT_THROW(parse_stage_layers("3,0", 3, 2), Error);
  EXPECT_THROW(parse_stage_layers("1,x", 3, 2), Error);
  EXPECT_THROW(parse_stage_layers("1,1,1", 3, 2), Error);
  EXPECT_EQ(stage_cuts_string({0, 2, 3}), "0..1 | 2..2");
}

class PipelineRuns : public testing::ParallelRuns {
 protected:
  // tiny with more layers (Engram on layers 1 and 2) or tied embeddings.
  std::string variant(const std::string& name, int layers, bool tied) {
    std::ifstream in(tiny());
    nlohmann::json j = nlohmann::json::parse(in);
    j["num_hidden_layers"] = layers;
    j["tie_word_embeddings"] = tied;
    if (layers >= 4) j["engram"]["layer_ids"] = {1, 2};
    const std::string file = path(name + ".json");
    std::ofstream(file) << j.dump(2);
    return file;
  }
  std::string args(const std::string& config, const std::string& out, const std::string& extra, int steps = 20,
                   const std::string& every = "--eval-every 10 --checkpoint-every 10") {
    std::string a = train_args(out, extra, steps, every);
    return a.replace(a.find(tiny()), tiny().size(), config);
  }
  // "memory of rank R: weights W MiB": W.
  static double weights_mib(const std::string& err, int rank) {
    const std::string key = "memory of rank " + std::to_string(rank) + ": weights ";
    const size_t at = err.find(key);
    return at == std::string::npos ? -1 : std::stod(err.substr(at + key.size()));
  }
};

TEST_F(PipelineRuns, TwoStagesByTwoReplicasTrainLikeOneProcess) {
  // World rank = stage x 2 + replica: ranks 0, 1 hold layers 0..1 (with
  // the embedding), ranks 2, 3 layer 2 and the head. 7 held-out windows:
  // replica 0 evaluates 3 (batches of 2 and 1), replica 1 4, one process
  // batches of 2, 2, 2, 1, so the held-out loss agrees within 1e-8.
  const testing::CliResult one = memoe(train_args(path("one"), "--batch 2 --grad-accum 4 --eval-windows 7"));
  ASSERT_EQ(one.status, 0) << one.err;
  const testing::CliResult pp =
      mpi(4, train_args(path("pp"), "--batch 4 --pp 2 --dp 2 --grad-accum 2 --eval-windows 7 --pp-balance flops"));
  ASSERT_EQ(pp.status, 0) << pp.err;
  expect_same_run(path("one"), path("pp"), 1e-8);
  EXPECT_NE(pp.err.find("pipeline: 2 stages of layers 0..1 | 2..2 (balanced by FLOPs)"), std::string::npos) << pp.err;
  // Each stage holds its own layers only: together they hold one model.
  const double whole = weights_mib(one.err, 0), first = weights_mib(pp.err, 0), last = weights_mib(pp.err, 2);
  ASSERT_GT(first, 0) << pp.err;
  EXPECT_LT(first, whole);
  EXPECT_LT(last, whole);
  EXPECT_NEAR(first + last, whole, 0.02);
  EXPECT_EQ(weights_mib(pp.err, 1), first);
  // Each stage's Engram tables sharded over its two ranks: the same again.
  const testing::CliResult sharded = mpi(
      4, train_args(path("sharded"), "--batch 4 --pp 2 --dp 2 --grad-accum 2 --eval-windows 7 --engram-shard"));
  ASSERT_EQ(sharded.status, 0) << sharded.err;
  expect_same_run(path("one"), path("sharded"), 1e-8);
  // ZeRO-1 inside each stage: each replica keeps half of its stage's moments.
  const testing::CliResult zero =
      mpi(4, train_args(path("zero"), "--batch 4 --pp 2 --dp 2 --grad-accum 2 --eval-windows 7 --zero 1"));
  ASSERT_EQ(zero.status, 0) << zero.err;
  expect_same_run(path("one"), path("zero"), 1e-8);
  EXPECT_NE(zero.err.find("ZeRO-1"), std::string::npos) << zero.err;
  const auto m = metrics(path("pp"));
  EXPECT_EQ(m.at(1).at("pipeline_idle").size(), 2u);
  EXPECT_DOUBLE_EQ(m.at(1).at("pipeline_ideal_bubble").get<double>(), 1.0 / 3.0);
}

TEST_F(PipelineRuns, TwoStagesWithExpertParallelTrainLikeOneProcess) {
  // PP 2 x EP 2 on 4 ranks: each stage's two ranks split its MoE layers' experts.
  expect_layout_trains_like_one_process(
      "--batch 2 --grad-accum 4", 4, "--batch 4 --pp 2 --dp 2 --ep 2 --grad-accum 2 --pp-layers 1,2",
      [](const testing::CliResult&, const testing::CliResult& pp, const std::string&) {
        EXPECT_NE(pp.err.find("pipeline: 2 stages of layers 0..0 | 1..2 (--pp-layers)"), std::string::npos) << pp.err;
      });
}

TEST_F(PipelineRuns, FourStagesTrainLikeOneProcess) {
  const std::string four = variant("four", 4, false);
  const testing::CliResult one = memoe(args(four, path("one"), "--batch 2 --grad-accum 4"));
  ASSERT_EQ(one.status, 0) << one.err;
  const testing::CliResult pp = mpi(4, args(four, path("pp"), "--batch 2 --pp 4 --grad-accum 4"));
  ASSERT_EQ(pp.status, 0) << pp.err;
  expect_same_run(path("one"), path("pp"));
  EXPECT_NE(pp.err.find("pipeline: 4 stages of layers 0..0 | 1..1 | 2..2 | 3..3"), std::string::npos) << pp.err;
}

TEST_F(PipelineRuns, TiedEmbeddingsStayInSyncAcrossStages) {
  // The first stage's embedding and the last stage's head are one tensor:
  // the head's part of its gradient travels to the first stage, the
  // updated weights back; the result is one process's.
  const std::string tied = variant("tied", 3, true);
  const testing::CliResult one = memoe(args(tied, path("one"), "--batch 2 --grad-accum 3"));
  ASSERT_EQ(one.status, 0) << one.err;
  const testing::CliResult pp = mpi(2, args(tied, path("pp"), "--batch 2 --pp 2 --grad-accum 3"));
  ASSERT_EQ(pp.status, 0) << pp.err;
  expect_same_run(path("one"), path("pp"));
}

TEST_F(PipelineRuns, CheckpointsResumeAcrossPipelineLayouts) {
  // 10 steps in one layout, 10 in another, against one process taking the
  // same sequences per sum (batch 4 over dp ranks: --batch 4/dp, --grad-accum
  // 2·dp): bit for bit, whichever stages wrote the checkpoint's shards.
  const std::string four = variant("four", 4, false);
  const std::string every = "--eval-every 0 --checkpoint-every 5 --precision fp32";
  ASSERT_EQ(memoe(args(four, path("ref2"), "--batch 2 --grad-accum 4", 20, every)).status, 0);
  ASSERT_EQ(memoe(args(four, path("ref4"), "--batch 4 --grad-accum 2", 20, every)).status, 0);
  struct Pair {
    std::string name, first;
    int first_ranks;
    std::string then;
    int ranks;
    std::string ref;
  };
  const std::vector<Pair> pairs = {
      {"pp2dp2_to_dp2", "--pp 2 --dp 2", 4, "--pp 1", 2, "ref2"},
      {"dp2_to_pp2dp2", "--dp 2", 2, "--pp 2", 4, "ref2"},
      {"pp2ep2_to_dp2", "--pp 2 --dp 2 --ep 2", 4, "--pp 1 --ep 1", 2, "ref2"},
      {"pp4_to_one", "--pp 4", 4, "--pp 1", 1, "ref4"},
      {"one_to_pp2", "", 1, "--pp 2", 2, "ref4"},
      {"pp2_to_pp4", "--pp 2", 2, "--pp 4", 4, "ref4"},
  };
  for (const Pair& p : pairs) {
    const std::string first = args(four, path(p.name), "--batch 4 --grad-accum 2 --decay-steps 20 " + p.first, 10, every);
    const testing::CliResult a = p.first_ranks == 1 ? memoe(first) : mpi(p.first_ranks, first);
    ASSERT_EQ(a.status, 0) << p.name << a.err;
    const std::string resume = "train --resume " + path(p.name) + " --steps 20 " + p.then;
    const testing::CliResult b = p.ranks == 1 ? memoe(resume) : mpi(p.ranks, resume);
    ASSERT_EQ(b.status, 0) << p.name << b.err;
    const auto m = metrics(path(p.name)), ref = metrics(path(p.ref));
    ASSERT_EQ(m.size(), 20u) << p.name;
    for (int64_t step = 1; step <= 20; ++step)
      EXPECT_EQ(m.at(step).at("loss"), ref.at(step).at("loss")) << p.name << " step " << step;
    std::ifstream in(path(p.name) + "/train.json");
    EXPECT_EQ(nlohmann::json::parse(in).at("pp"), std::stoi(p.then.substr(5))) << p.name;
  }
}

TEST_F(PipelineRuns, ALayoutThatDoesNotFitIsOneLine) {
  const testing::CliResult three = mpi(4, train_args(path("a"), "--batch 4 --pp 3 --dp 1"));
  EXPECT_NE(three.status, 0);
  EXPECT_NE(three.err.find("--pp 3 x --dp 1 does not fit the world of 4 ranks"), std::string::npos) << three.err;
  const testing::CliResult many = mpi(4, train_args(path("b"), "--batch 4 --pp 4 --dp 1"));
  EXPECT_NE(many.status, 0);
  EXPECT_NE(many.err.find("--pp 4: the model's 3 layers cannot make that many stages"), std::string::npos) << many.err;
  const testing::CliResult counts = mpi(2, train_args(path("c"), "--batch 4 --pp 2 --pp-layers 2,2"));
  EXPECT_NE(counts.status, 0);
  EXPECT_NE(counts.err.find("--pp-layers '2,2' adds up to 4 layers, the model has 3"), std::string::npos) << counts.err;
  // A resume whose recorded --pp does not divide the new world says so.
  ASSERT_EQ(mpi(2, train_args(path("e"), "--batch 4 --pp 2", 2)).status, 0);
  const testing::CliResult alone = memoe("train --resume " + path("e") + " --steps 3");
  EXPECT_NE(alone.status, 0);
  EXPECT_NE(alone.err.find("its --pp 2 does not divide the world of 1"), std::string::npos) << alone.err;
  EXPECT_EQ(memoe("train --resume " + path("e") + " --steps 3 --pp 1").status, 0);
}

TEST_F(PipelineRuns, AKilledOrHungStageEndsTheRun) {
  // Rank 1 is the last stage: killed, rank 0 is left waiting for its
  // gradients; stopped, rank 0 names the wait.
  expect_failed_rank_ends_the_run(1, SIGKILL, "", "--pp 1", "--pp 2");
  expect_failed_rank_ends_the_run(1, SIGSTOP, "--collective-timeout 3 --checkpoint-timeout 3", "--pp 1", "--pp 2");
  expect_failed_rank_ends_the_run(0, SIGKILL, "", "--pp 1", "--pp 2");
}

}  // namespace
}  // namespace memoe
