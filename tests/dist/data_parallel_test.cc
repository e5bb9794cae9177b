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

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
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

}  // namespace
}  // namespace memoe
