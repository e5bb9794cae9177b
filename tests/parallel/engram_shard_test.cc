// Sharded Engram tables (parallel/engram_shard.h) over MPI against one process
// on the same global batch, 1 thread a rank: each rank holds its rows of
// every table and fetches the rows a pass reads from their owners; the
// rows are exact copies and the row gradients are summed in data
// parallel's order, so the runs agree bit for bit.
#include "parallel_runs.h"

namespace memoe {
namespace {

namespace fs = std::filesystem;

class ShardedEngram : public testing::ParallelRuns {
 protected:
  // "Engram tables of rank R: rows B bytes, optimizer state M bytes": (B, M) per rank.
  static std::vector<std::pair<int64_t, int64_t>> table_bytes(const std::string& err) {
    std::vector<std::pair<int64_t, int64_t>> out;
    for (size_t at = err.find("Engram tables of rank "); at != std::string::npos;
         at = err.find("Engram tables of rank ", at + 1)) {
      int rank = 0;
      long long rows = 0, moments = 0;
      if (std::sscanf(err.c_str() + at, "Engram tables of rank %d: rows %lld bytes, optimizer state %lld", &rank, &rows,
                      &moments) == 3)
        out.emplace_back(rows, moments);
    }
    return out;
  }
};

TEST_F(ShardedEngram, FourRanksTrainLikeOneProcessAndHoldAQuarterOfTheRows) {
  // 7 held-out windows over 4 ranks: rank 0 joins the others' second
  // evaluation pass with no rows of its own, serving theirs.
  const testing::CliResult one = memoe(train_args(path("one"), "--batch 1 --grad-accum 4 --eval-windows 7"));
  ASSERT_EQ(one.status, 0) << one.err;
  const testing::CliResult dp = mpi(4, train_args(path("dp"), "--batch 4 --dp 4 --eval-windows 7", 1));
  ASSERT_EQ(dp.status, 0) << dp.err;
  const testing::CliResult shard = mpi(4, train_args(path("shard"), "--batch 4 --dp 4 --engram-shard --eval-windows 7"));
  ASSERT_EQ(shard.status, 0) << shard.err;
  expect_same_run(path("one"), path("shard"));
  std::ifstream in(path("shard/train.json"));
  EXPECT_EQ(nlohmann::json::parse(in).at("engram_shard"), true);
  // Rows and moments: every rank's quarter adds up to one whole table
  // (each row held once), where plain data parallel holds it on every rank.
  const auto whole = table_bytes(dp.err), quarters = table_bytes(shard.err);
  ASSERT_EQ(whole.size(), 4u) << dp.err;
  ASSERT_EQ(quarters.size(), 4u) << shard.err;
  int64_t rows = 0, moments = 0;
  for (const auto& [r, m] : quarters) {
    EXPECT_LE(r, whole[0].first / 4 + 2 * 16 * 4) << "more than a quarter of the rows and one row a table";
    rows += r;
    moments += m;
  }
  EXPECT_EQ(rows, whole[0].first);
  EXPECT_EQ(moments, 2 * whole[0].first) << "AdamW's two moments of exactly the held rows";
}

TEST_F(ShardedEngram, ComposesWithExpertParallel) {
  const testing::CliResult one = memoe(train_args(path("one"), "--batch 1 --grad-accum 8"));
  ASSERT_EQ(one.status, 0) << one.err;
  const testing::CliResult both =
      mpi(4, train_args(path("both"), "--batch 4 --dp 4 --ep 2 --engram-shard --grad-accum 2"));
  ASSERT_EQ(both.status, 0) << both.err;
  expect_same_run(path("one"), path("both"));
}

TEST_F(ShardedEngram, ACheckpointOfRowPiecesResumesOnAnyLayout) {
  // Each rank writes its rows of a table as a piece NAME[begin:end]; a
  // resume on 2 ranks (other rows each) or on 1 process (every row) reads
  // them whole and continues the uninterrupted run's losses (a rank there
  // sums 2 or 4 sequences at once: within 1e-6, as data parallel's resume).
  const std::string every = "--eval-every 0 --checkpoint-every 5 --precision fp32";
  ASSERT_EQ(mpi(4, train_args(path("ref"), "--batch 4 --dp 4 --engram-shard", 20, every)).status, 0);
  const testing::CliResult half =
      mpi(4, train_args(path("half"), "--batch 4 --dp 4 --engram-shard --decay-steps 20", 10, every));
  ASSERT_EQ(half.status, 0) << half.err;
  const std::string table = "model.layers.1.engram.embedding.weight";
  const SafetensorsSet stored = SafetensorsSet::open(path("half/checkpoints/latest"), "model");
  EXPECT_FALSE(stored.has(table));
  int pieces = 0;
  for (const std::string& name : stored.names()) pieces += name.rfind(table + "[", 0) == 0;
  EXPECT_EQ(pieces, 4);
  Model whole = load_model(path("half/checkpoints/latest"));
  EXPECT_GT(whole.params.layers[1].engram.embedding.numel(), 0);
  fs::copy(path("half"), path("half2"), fs::copy_options::recursive | fs::copy_options::copy_symlinks);
  const testing::CliResult on_two = mpi(2, "train --resume " + path("half") + " --steps 20");
  ASSERT_EQ(on_two.status, 0) << on_two.err;
  const testing::CliResult on_one = memoe("train --resume " + path("half2") + " --steps 20");
  ASSERT_EQ(on_one.status, 0) << on_one.err;
  const auto ref = metrics(path("ref"));
  for (const std::string run : {"half", "half2"}) {
    const auto m = metrics(path(run));
    ASSERT_EQ(m.size(), 20u) << run;
    for (int64_t step = 1; step <= 20; ++step) {
      const double want = ref.at(step).at("loss").get<double>(), got = m.at(step).at("loss").get<double>();
      EXPECT_LE(std::fabs(got - want), 1e-6 * want) << run << " step " << step;
    }
  }
}

TEST_F(ShardedEngram, AKilledRankEndsTheRunInTheRowFetch) {
  expect_failed_rank_ends_the_run(1, SIGKILL, "--engram-shard");
  expect_failed_rank_ends_the_run(0, SIGSTOP, "--engram-shard --collective-timeout 3 --checkpoint-timeout 3");
}

}  // namespace
}  // namespace memoe
