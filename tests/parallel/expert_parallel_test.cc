// Expert-parallel training over MPI (parallel/expert_parallel.h) against one
// process on the same global batch, 1 thread a rank. An owner runs each
// expert over each source rank's rows apart and the step's sums keep data
// parallel's order, so every layout agrees bit for bit: losses, gradient
// norms, routing loads and every parameter after 20 steps.
#include "parallel_runs.h"

namespace memoe {
namespace {

class ExpertParallelRuns : public testing::ParallelRuns {
 protected:
  // "routed experts of rank 0: weights W bytes, step gradients G bytes,
  // optimizer state O bytes, ...": (W, G, O).
  static std::tuple<int64_t, int64_t, int64_t> expert_bytes(const std::string& err) {
    const std::string key = "routed experts of rank 0: weights ";
    const size_t at = err.find(key);
    if (at == std::string::npos) return {-1, -1, -1};
    long long w = 0, g = 0, o = 0;
    std::sscanf(err.c_str() + at + key.size(), "%lld bytes, step gradients %lld bytes, optimizer state %lld", &w, &g, &o);
    return {w, g, o};
  }
};

TEST_F(ExpertParallelRuns, TwoByTwoTrainsLikeOneProcessAcrossMicroBatches) {
  // EP 2 x DP 2: ranks 0,1 and 2,3 are the EP groups; the shards' running
  // gradient sums pass between the groups every micro-batch. 7 held-out
  // windows over 4 ranks: rank 0 evaluates 1, the others 2, so rank 0
  // joins its group's second evaluation pass with no rows of its own.
  expect_layout_trains_like_one_process(
      "--batch 1 --grad-accum 8 --eval-windows 7", 4, "--batch 4 --dp 4 --ep 2 --grad-accum 2 --eval-windows 7",
      [](const testing::CliResult&, const testing::CliResult&, const std::string& dir) {
        std::ifstream in(dir + "/train.json");
        EXPECT_EQ(nlohmann::json::parse(in).at("ep"), 2);
      });
}

TEST_F(ExpertParallelRuns, OneGroupOfFourTrainsLikeOneProcessAndHoldsAQuarterOfTheExperts) {
  const testing::CliResult one = memoe(train_args(path("one"), "--batch 1 --grad-accum 4"));
  ASSERT_EQ(one.status, 0) << one.err;
  const testing::CliResult dp = mpi(4, train_args(path("dp"), "--batch 4 --dp 4"));
  ASSERT_EQ(dp.status, 0) << dp.err;
  const testing::CliResult ep = mpi(4, train_args(path("ep"), "--batch 4 --dp 4 --ep 4"));
  ASSERT_EQ(ep.status, 0) << ep.err;
  expect_same_run(path("one"), path("ep"));
  // The routed experts' weights, step gradients and moments fall as 1/E.
  const auto [w1, g1, o1] = expert_bytes(dp.err);
  const auto [w4, g4, o4] = expert_bytes(ep.err);
  // tiny: 2 MoE layers x 8 experts x 3 matrices of 16 x 32 fp32 (bf16 copies too where the CPU has them).
  const int64_t all_experts = 2 * 8 * 3 * 16 * 32 * 4;
  ASSERT_GT(w1, 0) << dp.err;
  EXPECT_EQ(g1, all_experts);
  EXPECT_EQ(o1, 2 * all_experts) << "two moments";
  EXPECT_EQ(w4 * 4, w1);
  EXPECT_EQ(g4 * 4, g1);
  EXPECT_EQ(o4 * 4, o1);
  // The price of agreeing bit for bit: each of the 4 sources' gradient of
  // the 2 held experts, apart (as large as data parallel's micro-batch buffer).
  EXPECT_NE(ep.err.find("per-source gradient buffers " + std::to_string(all_experts) + " bytes"), std::string::npos)
      << ep.err;
}

TEST_F(ExpertParallelRuns, CheckpointsResumeAcrossExpertLayouts) {
  // Reference: 20 steps of plain data parallel on 4 ranks. Stopped after
  // 10 steps in one layout, resumed in another: DP 4 -> EP 2 x DP 2, EP 2 x
  // DP 2 -> EP 4, EP 4 -> DP 4 agree with it bit for bit (each rank sums
  // the same sequences); EP 4 -> EP 2 on 2 ranks, where a rank sums 2
  // sequences at once, within 1e-6 (as data parallel's resume on fewer
  // ranks).
  const std::string every = "--eval-every 0 --checkpoint-every 5 --precision fp32";
  const std::string half = "--batch 4 --dp 4 --decay-steps 20 ";
  ASSERT_EQ(mpi(4, train_args(path("ref"), "--batch 4 --dp 4", 20, every)).status, 0);
  const std::vector<std::tuple<std::string, std::string, int, std::string>> pairs = {
      {"dp4_to_ep2", "--ep 1", 4, "--ep 2"},
      {"ep2_to_ep4", "--ep 2", 4, "--ep 4"},
      {"ep4_to_dp4", "--ep 4", 4, "--ep 1"},
      {"ep4_to_ep2_on_two", "--ep 4", 2, "--ep 2"},
  };
  const auto ref = metrics(path("ref"));
  ASSERT_EQ(ref.size(), 20u);
  for (const auto& [name, first, ranks, then] : pairs) {
    const testing::CliResult a = mpi(4, train_args(path(name), half + first, 10, every));
    ASSERT_EQ(a.status, 0) << name << a.err;
    const testing::CliResult b = mpi(ranks, "train --resume " + path(name) + " --steps 20 " + then);
    ASSERT_EQ(b.status, 0) << name << b.err;
    const auto m = metrics(path(name));
    ASSERT_EQ(m.size(), 20u) << name;
    for (int64_t step = 1; step <= 20; ++step) {
      const double want = ref.at(step).at("loss").get<double>(), got = m.at(step).at("loss").get<double>();
      if (ranks == 4)
        EXPECT_EQ(got, want) << name << " step " << step;
      else
        EXPECT_LE(std::fabs(got - want), 1e-6 * want) << name << " step " << step;
    }
    std::ifstream in(path(name) + "/train.json");
    EXPECT_EQ(nlohmann::json::parse(in).at("ep"), std::stoi(then.substr(5))) << name;
  }
}

TEST_F(ExpertParallelRuns, ALayoutThatDoesNotFitIsOneLine) {
  const testing::CliResult three = mpi(4, train_args(path("a"), "--batch 4 --dp 4 --ep 3"));
  EXPECT_NE(three.status, 0);
  EXPECT_NE(three.err.find("--ep 3 does not divide --dp 4"), std::string::npos) << three.err;
  const testing::CliResult zero = memoe(train_args(path("b"), "--batch 4 --ep 1 --zero 1", 1));
  EXPECT_EQ(zero.status, 0) << zero.err;
  const testing::CliResult both = mpi(2, train_args(path("c"), "--batch 4 --dp 2 --ep 2 --zero 1"));
  EXPECT_NE(both.status, 0);
  EXPECT_NE(both.err.find("--zero 1 with --ep 2 is not supported yet"), std::string::npos) << both.err;
  // A resume whose recorded --ep does not divide the new world says so.
  ASSERT_EQ(mpi(2, train_args(path("d"), "--batch 4 --dp 2 --ep 2", 2)).status, 0);
  const testing::CliResult alone = memoe("train --resume " + path("d") + " --steps 3");
  EXPECT_NE(alone.status, 0);
  EXPECT_NE(alone.err.find("--ep 2 does not divide --dp 1"), std::string::npos) << alone.err;
  EXPECT_EQ(memoe("train --resume " + path("d") + " --steps 3 --ep 1").status, 0);
}

TEST_F(ExpertParallelRuns, AKilledOrHungRankEndsTheRunInTheExpertExchange) {
  expect_failed_rank_ends_the_run(1, SIGKILL, "--ep 2", "--ep 1");
  expect_failed_rank_ends_the_run(1, SIGSTOP, "--ep 2 --collective-timeout 3 --checkpoint-timeout 3", "--ep 1");
}

}  // namespace
}  // namespace memoe
