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
  std::string train_args(const std::string& out, const std::string& extra) const {
    return "train --config " + tiny() + " --data " + path("data") + " --out " + out +
           " --steps 20 --seq 32 --warmup 5 --lr 3e-3 --eval-every 10 --eval-windows 8 --checkpoint-every 10 " + extra;
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
  void expect_killed_rank_ends_the_run(int victim_rank);
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

// A rank killed (SIGKILL) mid-run: every rank is gone within 30 s, the
// launcher exits non-zero naming the rank, the last published checkpoint
// loads, and the run resumes on one process. Rank 0 writes a checkpoint
// every 5 steps (tens a second here), so killing it often lands mid-write:
// the atomic publish leaves the previous one whole.
void DataParallel::expect_killed_rank_ends_the_run(int victim_rank) {
  const std::string run = path("run" + std::to_string(victim_rank));
  const std::string command = "exec mpirun --allow-run-as-root --oversubscribe --bind-to none -x OMP_NUM_THREADS=1 "
                              "-x ASAN_OPTIONS=detect_leaks=0 -n 2 " + std::string(MEMOE_CLI) + " " +
                              "train --config " + tiny() + " --data " + path("data") + " --out " + run +
                              " --steps 100000 --seq 32 --batch 4 --dp 2 --eval-every 0 --checkpoint-every 5 "
                              "--keep-last 2 >" + path("out") + " 2>" + path("err");
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
  ASSERT_EQ(kill(victim, SIGKILL), 0);
  const auto killed = std::chrono::steady_clock::now();
  int status = 0;
  pid_t done = 0;
  while ((done = waitpid(launcher, &status, WNOHANG)) == 0 &&
         std::chrono::steady_clock::now() - killed < std::chrono::seconds(30))
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  if (done == 0) {
    kill(launcher, SIGKILL);
    waitpid(launcher, &status, 0);
    FAIL() << "mpirun still running 30 s after a rank was killed";
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
  for (int i = 0; i < 100 && alive(survivor); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(alive(survivor)) << "the other rank was left behind";
  const std::string err = io_testing::read_bytes(path("err"));
  EXPECT_NE(err.find("rank " + std::to_string(victim_rank)), std::string::npos) << err;
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
  expect_killed_rank_ends_the_run(1);
  expect_killed_rank_ends_the_run(0);  // the writer
}

}  // namespace
}  // namespace memoe
