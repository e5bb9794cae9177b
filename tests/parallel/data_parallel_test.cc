// Data-parallel training over MPI against single-process training on the
// same global batch, with 1 thread a rank: `mpirun -n R memoe train ...
// --batch B --dp R` against one process taking the same sequences as R
// micro-batches of B/R (`--batch B/R --grad-accum R`). Rank r reads windows
// r·B/R .. of every global micro-batch, and the gradients, losses and loads
// are summed in one fixed order on every layout (parallel/data_parallel.h), so
// the runs agree bit for bit: losses, gradient norms and every parameter
// after 20 steps; the held-out loss (summed over the ranks' shares) to
// 1e-12. The tiny preset has MoE layers with the router's bias update and
// an Engram layer with sparse table gradients.
#include "parallel_runs.h"

namespace memoe {
namespace {

namespace fs = std::filesystem;

class DataParallel : public testing::ParallelRuns {};

TEST_F(DataParallel, TwoRanksTrainLikeOneProcessOnTheGlobalBatch) {
  expect_layout_trains_like_one_process(
      "--batch 2 --grad-accum 2", 2, "--batch 4 --dp 2",
      [](const testing::CliResult& one, const testing::CliResult& two, const std::string& dir) {
        // The layout is the run's: train.json records it; rank 0 alone reports.
        std::ifstream in(dir + "/train.json");
        EXPECT_EQ(nlohmann::json::parse(in).at("dp"), 2);
        EXPECT_EQ(std::count(two.out.begin(), two.out.end(), '\n'), std::count(one.out.begin(), one.out.end(), '\n'))
            << two.out;
      });
}

TEST_F(DataParallel, FourRanksWithGradientAccumulation) {
  expect_layout_trains_like_one_process("--batch 1 --grad-accum 8", 4, "--batch 4 --dp 4 --grad-accum 2");
}

TEST_F(DataParallel, ALayoutThatDoesNotFitIsRefusedBeforeTraining) {
  // --dp 3 on 2 ranks, --dp 2 without mpirun, a batch the ranks cannot split.
  for (const auto& [ranks, extra, message] :
       {std::tuple{2, "--batch 6 --dp 3", "--dp 3 does not fit the world of 2 ranks"},
        std::tuple{1, "--batch 4 --dp 2", "--dp 2 does not fit the world of 1 process"},
        std::tuple{2, "--batch 3 --dp 2", "--batch 3 is not a multiple of --dp 2"}}) {
    const testing::CliResult r =
        ranks == 1 ? memoe(train_args(path("bad"), extra)) : mpi(ranks, train_args(path("bad"), extra));
    EXPECT_NE(r.status, 0) << extra;
    EXPECT_NE(r.err.find(message), std::string::npos) << extra << ": " << r.err;
    EXPECT_FALSE(fs::exists(path("bad/train.json"))) << extra;
  }
}


TEST_F(DataParallel, ZeroOneTrainsLikeOneProcessForEveryBucketingAndOverlap) {
  // ZeRO-1 shards the moments and the update; its sums and norm are the
  // unsharded ones, so the bits stay those of one process. Small buckets
  // (several per rank, cut inside tensors) and overlap off change only
  // when the bytes move.
  const testing::CliResult one = memoe(train_args(path("one"), "--batch 2 --grad-accum 2"));
  ASSERT_EQ(one.status, 0) << one.err;
  const testing::CliResult two = mpi(2, train_args(path("two"), "--batch 4 --dp 2 --zero 1 --bucket-mb 0.01"));
  ASSERT_EQ(two.status, 0) << two.err;
  expect_same_run(path("one"), path("two"));
  EXPECT_NE(two.err.find("ZeRO-1"), std::string::npos) << two.err;
  const testing::CliResult one8 = memoe(train_args(path("one8"), "--batch 1 --grad-accum 8"));
  ASSERT_EQ(one8.status, 0) << one8.err;
  const testing::CliResult four =
      mpi(4, train_args(path("four"), "--batch 4 --dp 4 --grad-accum 2 --zero 1 --overlap false --bucket-mb 0.05"));
  ASSERT_EQ(four.status, 0) << four.err;
  expect_same_run(path("one8"), path("four"));
  // A sharded checkpoint: four shards of weights and of moments, indexed.
  const std::string ckpt = path("four/checkpoints/latest");
  for (const char* stem : {"model", "optimizer"}) {
    EXPECT_TRUE(fs::exists(ckpt + "/" + stem + ".safetensors.index.json")) << stem;
    for (int k = 1; k <= 4; ++k) EXPECT_TRUE(fs::exists(ckpt + "/" + shard_file_name(stem, k, 4))) << stem << k;
  }
  EXPECT_FALSE(fs::exists(ckpt + "/model.safetensors"));
  // Every command that loads a model reads it as it reads one file: the
  // same logits as the single-process run's checkpoint (the same weights),
  // through the KV cache too, and eval runs on it.
  for (const char* run : {"one8", "four"}) {
    const testing::CliResult r = memoe("logits --model " + path(std::string(run) + "/checkpoints/latest") +
                                       " --ids 5,6,7,8 --out " + path(std::string(run) + ".npy"));
    ASSERT_EQ(r.status, 0) << r.err;
  }
  EXPECT_EQ(io_testing::read_bytes(path("one8.npy")), io_testing::read_bytes(path("four.npy")));
  const testing::CliResult eval = memoe("eval --model " + ckpt + " --data " + path("data"));
  EXPECT_EQ(eval.status, 0) << eval.err;
  const testing::CliResult cached =
      memoe("logits --model " + ckpt + " --ids 5,6,7,8 --decode 2 --out " + path("cached.npy"));
  ASSERT_EQ(cached.status, 0) << cached.err;
  EXPECT_EQ(io_testing::read_bytes(path("cached.npy")).size(), io_testing::read_bytes(path("four.npy")).size());
}

// The optimizer-state bytes each rank reported ("memory of rank r: ...
// optimizer state ... (N bytes").
std::vector<int64_t> optimizer_bytes(const std::string& err) {
  std::vector<int64_t> out;
  std::istringstream in(err);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("memory of rank ", 0) != 0) continue;
    const size_t at = line.find("optimizer state ");
    const size_t open = line.find('(', at);
    if (at == std::string::npos || open == std::string::npos) continue;
    out.push_back(std::stoll(line.substr(open + 1)));
  }
  return out;
}

TEST_F(DataParallel, ZeroOneDividesTheOptimizerStateByTheRanks) {
  std::vector<int64_t> whole;
  for (int ranks : {1, 2, 4}) {
    const std::string args =
        train_args(path("run" + std::to_string(ranks)), "--batch 4 --zero 1 --dp " + std::to_string(ranks), 1);
    const testing::CliResult r = ranks == 1 ? memoe(args) : mpi(ranks, args);
    ASSERT_EQ(r.status, 0) << r.err;
    const std::vector<int64_t> bytes = optimizer_bytes(r.err);
    ASSERT_EQ(bytes.size(), size_t(ranks)) << r.err;
    if (ranks == 1) whole = bytes;
    int64_t sum = 0, most = 0;
    for (int64_t b : bytes) sum += b, most = std::max(most, b);
    // Every moment is held once, and no rank holds much more than 1/R.
    EXPECT_EQ(sum, whole.at(0)) << ranks << " ranks";
    EXPECT_LE(double(most), 1.15 * double(whole.at(0)) / ranks) << ranks << " ranks: " << r.err;
  }
}

TEST_F(DataParallel, CheckpointsResumeOnAnyLayout) {
  // Reference: 20 steps on 4 ranks with ZeRO-1. The same run stopped after
  // 10 steps (of a schedule over 20) resumes on 1 process and on 2 ranks;
  // a single-process run of 10 steps resumes on 4 ranks. Each continues the
  // reference's losses. The resumed halves restore every weight and moment
  // exactly and differ only in how a rank sums its own sequences (3e-9
  // relative seen; 1e-6 allowed). The single-process run summed 4
  // sequences at once for its first 10 steps, which drifts by 1e-4 (1e-3
  // allowed). In fp32: in bf16 a rank's own sum rounds its products' inputs
  // differently when it holds another number of sequences (2e-5 seen).
  const std::string every = "--eval-every 0 --checkpoint-every 5 --precision fp32";
  ASSERT_EQ(mpi(4, train_args(path("ref"), "--batch 4 --dp 4 --zero 1", 20, every)).status, 0);
  const testing::CliResult half = mpi(4, train_args(path("half"), "--batch 4 --dp 4 --zero 1 --decay-steps 20", 10, every));
  ASSERT_EQ(half.status, 0) << half.err;
  fs::copy(path("half"), path("half2"), fs::copy_options::recursive | fs::copy_options::copy_symlinks);
  const testing::CliResult on_one = memoe("train --resume " + path("half") + " --steps 20");
  ASSERT_EQ(on_one.status, 0) << on_one.err;
  const testing::CliResult on_two = mpi(2, "train --resume " + path("half2") + " --steps 20");
  ASSERT_EQ(on_two.status, 0) << on_two.err;
  const testing::CliResult single = memoe(train_args(path("single"), "--batch 4 --decay-steps 20", 10, every));
  ASSERT_EQ(single.status, 0) << single.err;
  const testing::CliResult on_four = mpi(4, "train --resume " + path("single") + " --steps 20");
  ASSERT_EQ(on_four.status, 0) << on_four.err;
  const auto ref = metrics(path("ref"));
  ASSERT_EQ(ref.size(), 20u);
  for (const std::string run : {"half", "half2", "single"}) {
    const auto m = metrics(path(run));
    ASSERT_EQ(m.size(), 20u) << run;
    for (int64_t step = 11; step <= 20; ++step) {
      const double want = ref.at(step).at("loss").get<double>(), got = m.at(step).at("loss").get<double>();
      EXPECT_LE(std::fabs(got - want), (run == "single" ? 1e-3 : 1e-6) * want) << run << " step " << step;
    }
  }
  std::ifstream in(path("half2/train.json"));
  EXPECT_EQ(nlohmann::json::parse(in).at("dp"), 2);
}

TEST_F(DataParallel, AKilledRankEndsTheRunAndTheCheckpointSurvives) {
  expect_failed_rank_ends_the_run(1, SIGKILL, "");
  expect_failed_rank_ends_the_run(0, SIGKILL, "--zero 1");  // the rank that publishes
}

TEST_F(DataParallel, ARankThatThrowsMidStepEndsTheRunNamingItself) {
  // mpirun's MPMD form gives rank 1 a learning rate that makes its own
  // weights diverge (plain data parallel: each rank updates its replica),
  // so its router throws on non-finite logits in the forward pass of a
  // later step while rank 0 waits in the gradient exchange.
  const std::string rank0 =
      train_args(path("run"), "--batch 4 --dp 2 --clip 0", 20, "--eval-every 0 --checkpoint-every 1");
  std::string rank1 = rank0;
  rank1.replace(rank1.find("--lr 3e-3"), 9, "--lr 1e30");
  const auto start = std::chrono::steady_clock::now();
  const testing::CliResult r = memoe_with_launcher(
      "mpirun --allow-run-as-root --oversubscribe --bind-to none -x OMP_NUM_THREADS=1 -x ASAN_OPTIONS=detect_leaks=0 "
      "-n 1 " + std::string(MEMOE_CLI) + " " + rank0 + " : -n 1",
      rank1);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30));
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find("memoe: error on rank 1 of 2: step "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("non-finite"), std::string::npos) << r.err;
  // The last published checkpoint is whole.
  ASSERT_TRUE(fs::exists(path("run/checkpoints/latest"))) << r.err;
  Model model = load_model(path("run/checkpoints/latest"));
  EXPECT_GT(model.params.embed_tokens.numel(), 0);
}

TEST_F(DataParallel, AHungRankEndsTheRunWithinTheCollectiveTimeout) {
  expect_failed_rank_ends_the_run(1, SIGSTOP, "--collective-timeout 3 --checkpoint-timeout 3");
  expect_failed_rank_ends_the_run(0, SIGSTOP, "--collective-timeout 3 --checkpoint-timeout 3 --zero 1");
}

}  // namespace
}  // namespace memoe
