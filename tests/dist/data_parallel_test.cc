// Data-parallel training over MPI against single-process training on the
// same global batch, with 1 thread a rank: `mpirun -n R memoe train ...
// --batch B --dp R` against one process taking the same sequences as R
// micro-batches of B/R (`--batch B/R --grad-accum R`). Rank r reads windows
// r·B/R .. of every global micro-batch, and the gradients, losses and loads
// are summed in one fixed order on every layout (dist/data_parallel.h), so
// the runs agree bit for bit: losses, gradient norms and every parameter
// after 20 steps; the held-out loss (summed over the ranks' shares) to
// 1e-12. The tiny preset has MoE layers with the router's bias update and
// an Engram layer with sparse table gradients.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>
#include <tuple>

#include "cli_runner.h"
#include "phrase_corpus.h"
#include "io/safetensors_set.h"
#include "model/checkpoint.h"

namespace memoe {
namespace {

namespace fs = std::filesystem;

class DataParallel : public testing::CliTest {
 protected:
  void SetUp() override {
    CliTest::SetUp();
    testing::write_phrase_corpus(path("data"));
  }
  static std::string tiny() { return testing::tiny_config(); }
  std::string train_args(const std::string& out, const std::string& extra, int steps = 20,
                         const std::string& every = "--eval-every 10 --checkpoint-every 10") const {
    return "train --config " + tiny() + " --data " + path("data") + " --out " + out + " --steps " +
           std::to_string(steps) + " --seq 32 --warmup 5 --lr 3e-3 --eval-windows 8 " + every + " " + extra;
  }
  // `memoe ARGS` on `ranks` MPI ranks of one thread each. In the sanitized
  // build the ranks run without the leak check: OpenMPI keeps its runtime's
  // state past MPI_Finalize in plugins it has unloaded by exit, which
  // LeakSanitizer cannot name, so no suppression matches them. Address and
  // undefined-behaviour checks stay on; the single-process tests check the
  // same code for leaks.
  testing::CliResult mpi(int ranks, const std::string& args) {
    return memoe_with_launcher("mpirun --allow-run-as-root --oversubscribe --bind-to none -x OMP_NUM_THREADS=1 "
                               "-x ASAN_OPTIONS=detect_leaks=0 -n " +
                                   std::to_string(ranks),
                               args);
  }
  void expect_failed_rank_ends_the_run(int victim_rank, int signal, const std::string& extra);
  static std::map<int64_t, nlohmann::json> metrics(const std::string& run) {
    std::map<int64_t, nlohmann::json> out;
    std::ifstream in(run + "/metrics.jsonl");
    std::string line;
    while (std::getline(in, line)) {
      const auto j = nlohmann::json::parse(line);
      out[j.at("step").get<int64_t>()] = j;
    }
    return out;
  }
  // The two runs' metrics step by step and every tensor of their last
  // checkpoints: equal, but for the held-out loss within 1e-12.
  void expect_same_run(const std::string& single, const std::string& parallel) {
    const auto a = metrics(single), b = metrics(parallel);
    ASSERT_EQ(a.size(), 20u);
    ASSERT_EQ(b.size(), a.size());
    for (const auto& [step, ja] : a) {
      const auto& jb = b.at(step);
      for (const char* key : {"loss", "grad_norm", "lr", "tokens", "expert_load_max_over_mean"})
        EXPECT_EQ(ja.at(key), jb.at(key)) << key << " at step " << step;
      ASSERT_EQ(ja.contains("val_loss"), jb.contains("val_loss")) << step;
      if (ja.contains("val_loss")) {
        const double x = ja["val_loss"].get<double>(), y = jb["val_loss"].get<double>();
        EXPECT_LE(std::fabs(x - y), 1e-12 * std::fabs(x)) << "val_loss at step " << step;
      }
    }
    Model ma = load_model(single + "/checkpoints/latest"), mb = load_model(parallel + "/checkpoints/latest");
    std::map<std::string, std::vector<float>> values;
    ma.params.visit([&](const std::string& name, Tensor& t) { values[name].assign(t.data(), t.data() + t.numel()); });
    size_t tensors = 0;
    mb.params.visit([&](const std::string& name, Tensor& t) {
      EXPECT_EQ(values.at(name), std::vector<float>(t.data(), t.data() + t.numel())) << name;
      ++tensors;
    });
    EXPECT_EQ(tensors, values.size());
  }
};

TEST_F(DataParallel, TwoRanksTrainLikeOneProcessOnTheGlobalBatch) {
  const testing::CliResult one = memoe(train_args(path("one"), "--batch 2 --grad-accum 2"));
  ASSERT_EQ(one.status, 0) << one.err;
  const testing::CliResult two = mpi(2, train_args(path("two"), "--batch 4 --dp 2"));
  ASSERT_EQ(two.status, 0) << two.err;
  expect_same_run(path("one"), path("two"));
  // The layout is the run's: train.json records it; rank 0 alone reports.
  std::ifstream in(path("two/train.json"));
  EXPECT_EQ(nlohmann::json::parse(in).at("dp"), 2);
  EXPECT_EQ(std::count(two.out.begin(), two.out.end(), '\n'), std::count(one.out.begin(), one.out.end(), '\n'))
      << two.out;
}

TEST_F(DataParallel, FourRanksWithGradientAccumulation) {
  const testing::CliResult one = memoe(train_args(path("one"), "--batch 1 --grad-accum 8"));
  ASSERT_EQ(one.status, 0) << one.err;
  const testing::CliResult four = mpi(4, train_args(path("four"), "--batch 4 --dp 4 --grad-accum 2"));
  ASSERT_EQ(four.status, 0) << four.err;
  expect_same_run(path("one"), path("four"));
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

// The pid of rank `rank` among launcher's children (their environment names it).
pid_t child_rank(pid_t launcher, int rank) {
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat(e.path() / "stat");
    std::string line;
    std::getline(stat, line);
    const size_t close = line.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(line.substr(close + 2));
    std::string state;
    long parent = 0;
    rest >> state >> parent;
    if (parent != launcher) continue;
    std::ifstream env(e.path() / "environ");
    std::string var;
    while (std::getline(env, var, '\0'))
      if (var == "OMPI_COMM_WORLD_RANK=" + std::to_string(rank)) return pid_t(std::stol(name));
  }
  return -1;
}

// A rank killed (SIGKILL) or stopped (SIGSTOP: hung) mid-run: every rank
// is gone within 30 s, the launcher exits non-zero, the error names the
// killed rank (or the waiting rank and what it waited in), the last
// published checkpoint loads, and the run resumes on one process. Every
// rank writes its shard of a checkpoint every 5 steps (tens a second
// here), so the signal often lands mid-write: the publish by rename leaves
// the previous checkpoint whole.
void DataParallel::expect_failed_rank_ends_the_run(int victim_rank, int signal, const std::string& extra) {
  const std::string run = path("run" + std::to_string(victim_rank) + "_" + std::to_string(signal));
  const std::string command = "exec mpirun --allow-run-as-root --oversubscribe --bind-to none -x OMP_NUM_THREADS=1 "
                              "-x ASAN_OPTIONS=detect_leaks=0 -n 2 " + std::string(MEMOE_CLI) + " " +
                              "train --config " + tiny() + " --data " + path("data") + " --out " + run +
                              " --steps 100000 --seq 32 --batch 4 --dp 2 --eval-every 0 --checkpoint-every 5 "
                              "--keep-last 2 " + extra + " >" + path("out") + " 2>" + path("err");
  const pid_t launcher = fork();
  ASSERT_GE(launcher, 0);
  if (launcher == 0) {
    execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  const auto start = std::chrono::steady_clock::now();
  auto seconds = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  while (!fs::exists(run + "/checkpoints/latest") && seconds() < 120)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_TRUE(fs::exists(run + "/checkpoints/latest")) << "no checkpoint in 120 s";
  const pid_t victim = child_rank(launcher, victim_rank), survivor = child_rank(launcher, 1 - victim_rank);
  ASSERT_GT(victim, 0) << "the victim not found among mpirun's children";
  ASSERT_GT(survivor, 0) << "the other rank not found among mpirun's children";
  ASSERT_EQ(kill(victim, signal), 0);
  const auto killed = std::chrono::steady_clock::now();
  int status = 0;
  pid_t done = 0;
  while ((done = waitpid(launcher, &status, WNOHANG)) == 0 &&
         std::chrono::steady_clock::now() - killed < std::chrono::seconds(30))
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  if (done == 0) {
    kill(launcher, SIGKILL);
    waitpid(launcher, &status, 0);
    FAIL() << "mpirun still running 30 s after signal " << signal << " to rank " << victim_rank;
  }
  EXPECT_FALSE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "mpirun exited 0";
  // Rank 0 is gone too (its pid no longer names a live process).
  auto alive = [](pid_t pid) {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!std::getline(stat, line)) return false;
    const size_t close = line.rfind(')');
    return close != std::string::npos && line.size() > close + 2 && line[close + 2] != 'Z';
  };
  for (int i = 0; i < 100 && (alive(survivor) || alive(victim)); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(alive(survivor)) << "the other rank was left behind";
  EXPECT_FALSE(alive(victim)) << "the failed rank was left behind";
  const std::string err = io_testing::read_bytes(path("err"));
  if (signal == SIGKILL) {
    EXPECT_NE(err.find("rank " + std::to_string(victim_rank)), std::string::npos) << err;
  } else {
    // The stopped rank cannot speak: the one left waiting says where.
    EXPECT_NE(err.find("error on rank " + std::to_string(1 - victim_rank) + " of 2: waited 3 s in a collective during "),
              std::string::npos)
        << err;
  }
  Model model = load_model(run + "/checkpoints/latest");
  EXPECT_GT(model.params.embed_tokens.numel(), 0);
  // The global batch is the run's: one process takes all 4 sequences.
  const std::string latest = fs::read_symlink(run + "/checkpoints/latest").string();  // step_00000010
  const int64_t step = std::stoll(latest.substr(latest.find('_') + 1));
  const testing::CliResult resumed = memoe("train --resume " + run + " --steps " + std::to_string(step + 3));
  ASSERT_EQ(resumed.status, 0) << resumed.err;
  std::ifstream in(run + "/train.json");
  EXPECT_EQ(nlohmann::json::parse(in).at("dp"), 1);
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
