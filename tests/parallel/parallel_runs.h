// The fixture of the MPI training tests: a phrase corpus, `memoe train`
// on R ranks of one thread each, the runs' metrics, a comparison of two
// runs step by step and tensor by tensor, and a rank killed or stopped
// mid-run.
#pragma once
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <thread>
#include <tuple>

#include "cli_runner.h"
#include "phrase_corpus.h"
#include "io/safetensors_set.h"
#include "model/checkpoint.h"

namespace memoe::testing {

namespace fs = std::filesystem;

class ParallelRuns : public CliTest {
 protected:
  void SetUp() override {
    CliTest::SetUp();
    write_phrase_corpus(path("data"));
  }
  static std::string tiny() { return tiny_config(); }
  // --eval-windows 8 unless extra sets it; the last evaluation reads as
  // many (not the whole split, whose windows split unevenly over the ranks:
  // fp32 products over batches of other sizes round differently).
  std::string train_args(const std::string& out, const std::string& extra, int steps = 20,
                         const std::string& every = "--eval-every 10 --checkpoint-every 10") const {
    const size_t given = extra.find("--eval-windows ");
    const std::string n = given == std::string::npos ? "8" : extra.substr(given + 15, extra.find(' ', given + 15) - given - 15);
    const std::string windows = (given == std::string::npos ? "--eval-windows 8 " : "") + std::string("--final-eval-windows ") + n + " ";
    return "train --config " + tiny() + " --data " + path("data") + " --out " + out + " --steps " +
           std::to_string(steps) + " --seq 32 --warmup 5 --lr 3e-3 " + windows + every + " " + extra;
  }
  // The single process the layouts are compared with, on two threads while
  // each rank has one: the bits depend on neither (kernels/linear.h), in
  // fp32 and in bf16.
  CliResult one_process(const std::string& args) { return memoe(args, 2); }
  static constexpr const char* kPrecisions[] = {"fp32", "bf16"};
  // In fp32 and in bf16: one process with `one_args` against `ranks` ranks
  // with `layout_args`, the same run bit for bit (expect_same_run); `more`
  // checks what else a test wants of the parallel run's result and directory.
  void expect_layout_trains_like_one_process(
      const std::string& one_args, int ranks, const std::string& layout_args,
      const std::function<void(const CliResult& one, const CliResult& parallel, const std::string& dir)>& more = {}) {
    for (const std::string precision : kPrecisions) {
      SCOPED_TRACE(precision);
      const std::string p = " --precision " + precision, one_dir = path("one-" + precision),
                        dir = path("parallel-" + precision);
      const CliResult one = one_process(train_args(one_dir, one_args + p));
      ASSERT_EQ(one.status, 0) << one.err;
      const CliResult parallel = mpi(ranks, train_args(dir, layout_args + p));
      ASSERT_EQ(parallel.status, 0) << parallel.err;
      expect_same_run(one_dir, dir);
      if (more) more(one, parallel, dir);
    }
  }
  // `memoe ARGS` on `ranks` MPI ranks of one thread each. In the sanitized
  // build the ranks run without the leak check: OpenMPI keeps its runtime's
  // state past MPI_Finalize in plugins it has unloaded by exit, which
  // LeakSanitizer cannot name, so no suppression matches them. Address and
  // undefined-behaviour checks stay on; the single-process tests check the
  // same code for leaks.
  CliResult mpi(int ranks, const std::string& args) {
    return memoe_with_launcher("mpirun --allow-run-as-root --oversubscribe --bind-to none -x OMP_NUM_THREADS=1 "
                               "-x ASAN_OPTIONS=detect_leaks=0 -n " +
                                   std::to_string(ranks),
                               args);
  }
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
  // checkpoints: equal, but for the held-out loss within val_tolerance
  // (relative): the ranks' sums add in another order, and where a rank's
  // evaluation batches have other sizes than one process's, the products
  // over them round differently (2e-9 seen in the clang build).
  void expect_same_run(const std::string& single, const std::string& parallel, double val_tolerance = 1e-12) {
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
        EXPECT_LE(std::fabs(x - y), val_tolerance * std::fabs(x)) << "val_loss at step " << step;
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

  // The same within `tolerance` relative: losses, gradient norms and the
  // held-out loss step by step, and each tensor of the last checkpoints
  // (its largest difference against its largest value): layouts whose sums
  // are split differently (pipeline stages add their norms' squares).
  void expect_close_run(const std::string& single, const std::string& parallel, double tolerance) {
    const auto a = metrics(single), b = metrics(parallel);
    ASSERT_EQ(a.size(), 20u);
    ASSERT_EQ(b.size(), a.size());
    auto close = [&](const nlohmann::json& x, const nlohmann::json& y) {
      return std::fabs(x.get<double>() - y.get<double>()) <= tolerance * std::fabs(x.get<double>());
    };
    for (const auto& [step, ja] : a) {
      const auto& jb = b.at(step);
      for (const char* key : {"loss", "grad_norm"})
        EXPECT_TRUE(close(ja.at(key), jb.at(key))) << key << " at step " << step << ": " << ja.at(key) << " vs "
                                                   << jb.at(key);
      EXPECT_EQ(ja.at("tokens"), jb.at("tokens"));
      ASSERT_EQ(ja.contains("val_loss"), jb.contains("val_loss")) << step;
      if (ja.contains("val_loss")) {
        EXPECT_TRUE(close(ja["val_loss"], jb["val_loss"])) << "val_loss at step " << step;
      }
    }
    Model ma = load_model(single + "/checkpoints/latest"), mb = load_model(parallel + "/checkpoints/latest");
    std::map<std::string, std::vector<float>> values;
    ma.params.visit([&](const std::string& name, Tensor& t) { values[name].assign(t.data(), t.data() + t.numel()); });
    size_t tensors = 0;
    mb.params.visit([&](const std::string& name, Tensor& t) {
      const std::vector<float>& want = values.at(name);
      ASSERT_EQ(want.size(), size_t(t.numel())) << name;
      double largest = 0, diff = 0;
      for (size_t i = 0; i < want.size(); ++i) {
        largest = std::max(largest, double(std::fabs(want[i])));
        diff = std::max(diff, double(std::fabs(want[i] - t[int64_t(i)])));
      }
      EXPECT_LE(diff, tolerance * largest) << name;
      ++tensors;
    });
    EXPECT_EQ(tensors, values.size());
  }

  // The pid of rank `rank` among launcher's children (their environment names it).
  static pid_t child_rank(pid_t launcher, int rank) {
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
  void expect_failed_rank_ends_the_run(int victim_rank, int signal, const std::string& extra,
                                         const std::string& resume_extra = "", const std::string& layout = "--dp 2") {
    const std::string run = path("run" + std::to_string(victim_rank) + "_" + std::to_string(signal));
    const std::string command = "exec mpirun --allow-run-as-root --oversubscribe --bind-to none -x OMP_NUM_THREADS=1 "
                                "-x ASAN_OPTIONS=detect_leaks=0 -n 2 " + std::string(MEMOE_CLI) + " " +
                                "train --config " + tiny() + " --data " + path("data") + " --out " + run +
                                " --steps 100000 --seq 32 --batch 4 " + layout + " --eval-every 0 --checkpoint-every 5 "
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
    const CliResult resumed = memoe("train --resume " + run + " --steps " + std::to_string(step + 3) + " " + resume_extra);
    ASSERT_EQ(resumed.status, 0) << resumed.err;
    std::ifstream in(run + "/train.json");
    EXPECT_EQ(nlohmann::json::parse(in).at("dp"), 1);
  }
};

}  // namespace memoe::testing
