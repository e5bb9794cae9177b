// memoe train end to end: exact resume after SIGKILL, divergence handling,
// and one-line errors for bad input. Runs the CLI binary on a tiny config
// and a synthetic token corpus.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "cli_runner.h"
#include "phrase_corpus.h"
#include "kernels/linear.h"
#include "model/checkpoint.h"
#include "model/init.h"
#include "train/schedule.h"

namespace memoe {
namespace {

namespace fs = std::filesystem;

class Train : public testing::CliTest {
 protected:
  void SetUp() override {
    CliTest::SetUp();
    testing::write_phrase_corpus(path("data"));
  }
  static std::string tiny() { return testing::tiny_config(); }
  std::string train_args(const std::string& out, int steps) const {
    return "train --config " + tiny() + " --data " + path("data") + " --out " + out + " --steps " +
           std::to_string(steps) + " --batch 4 --seq 32 --warmup 5 --lr 3e-3 --eval-every 0 --eval-windows 4" +
           " --checkpoint-every 5 --keep-last 2";
  }
  // Exit status; stderr in *err.
  int run(const std::string& args, std::string* err = nullptr, int threads = 1) {
    const testing::CliResult r = memoe(args, threads);
    if (err) *err = r.err;
    return r.status;
  }
  // step -> the "loss" field exactly as written.
  static std::map<int64_t, std::string> losses(const std::string& run) {
    std::map<int64_t, std::string> out;
    std::ifstream in(run + "/metrics.jsonl");
    std::string line;
    while (std::getline(in, line)) {
      const auto j = nlohmann::json::parse(line);
      out[j.at("step").get<int64_t>()] = j.at("loss").dump();
    }
    return out;
  }
  // The first metrics line's `key`.
  static double first_metric(const std::string& run, const std::string& key) {
    std::ifstream in(run + "/metrics.jsonl");
    std::string line;
    std::getline(in, line);
    return nlohmann::json::parse(line).at(key).get<double>();
  }
  // Every metrics line as written, less its timing (tokens_per_s, gflops, sgemm_gflops).
  static std::vector<std::string> metrics_without_timing(const std::string& run) {
    std::vector<std::string> out;
    std::ifstream in(run + "/metrics.jsonl");
    std::string line;
    while (std::getline(in, line)) {
      auto j = nlohmann::json::parse(line);
      for (const char* timing : {"tokens_per_s", "gflops", "sgemm_gflops", "step_s"}) j.erase(timing);
      out.push_back(j.dump());
    }
    return out;
  }
  // The config of LossesDoNotDependOnTheThreadCount, written to the scratch dir.
  std::string threaded_config() const;
  void expect_killed_run_resumes_exactly(int threads, const std::function<std::string(const std::string&)>& args,
                                         int steps);
  static std::string latest(const std::string& run) {
    std::error_code ec;
    return fs::read_symlink(run + "/checkpoints/latest", ec).string();
  }
};

// A config just large enough that every parallel path of the engine runs
// threaded (norms, short conv, cross-entropy, attention, the routers and the
// sequence balance loss, experts side by side, the gradient norm of the
// dense FFN's 768 x 96 tensors).
std::string Train::threaded_config() const {
  std::ifstream in(tiny());
  nlohmann::json cfg = nlohmann::json::parse(in);
  cfg["vocab_size"] = 128;        // 1024 rows x 128 logits: threaded cross-entropy
  cfg["hidden_size"] = 96;        // 1024 x 96: threaded norms and conv
  cfg["intermediate_size"] = 768; // 73,728-value tensors: threaded gradient norm
  cfg["moe_intermediate_size"] = 32;
  cfg["seq_aux_loss_alpha"] = 0.01;
  cfg["engram"]["table_sizes"] = {1009, 1013};
  const std::string config = path("threads.json");
  std::ofstream(config) << cfg.dump();
  return config;
}

// The whole run on one thread; the killed run and its resume on `threads`.
void Train::expect_killed_run_resumes_exactly(int threads,
                                              const std::function<std::string(const std::string&)>& args, int steps) {
  ASSERT_EQ(run(args(path("whole"))), 0);

  // The same run, killed with SIGKILL once it has written a checkpoint.
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    setenv("OMP_NUM_THREADS", std::to_string(threads).c_str(), 1);
    if (threads > 1) setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
    const std::string cmd = std::string(MEMOE_CLI) + " " + args(path("killed")) + " >/dev/null 2>&1";
    execl("/bin/sh", "sh", "-c", ("exec " + cmd).c_str(), (char*)nullptr);
    _exit(127);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (latest(path("killed")) < "step_00000010" && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the run finished before it could be killed";
  ASSERT_GE(latest(path("killed")), "step_00000010");

  std::string err;
  ASSERT_EQ(run("train --resume " + path("killed"), &err, threads), 0) << err;
  const auto want = losses(path("whole")), got = losses(path("killed"));
  ASSERT_EQ(want.size(), size_t(steps));
  ASSERT_EQ(got.size(), size_t(steps));
  for (const auto& [step, loss] : want) EXPECT_EQ(got.at(step), loss) << "step " << step;
  // Training learned something, and only the newest checkpoints remain.
  EXPECT_LT(std::stod(want.rbegin()->second), std::stod(want.begin()->second) - 0.3);
  int kept = 0, temporaries = 0;
  for (const auto& e : fs::directory_iterator(path("killed") + "/checkpoints")) {
    kept += e.path().filename().string().rfind("step_", 0) == 0;
    temporaries += e.path().filename().string()[0] == '.';
  }
  EXPECT_EQ(kept, 2);
  EXPECT_EQ(temporaries, 0);  // a checkpoint the kill interrupted is cleared on resume
  EXPECT_TRUE(fs::exists(path("killed") + "/loss.png"));
}

TEST_F(Train, KilledRunResumesWithIdenticalLosses) {
  expect_killed_run_resumes_exactly(1, [&](const std::string& out) { return train_args(out, 150) + " --precision fp32"; },
                                    150);
}

// bf16 too: its weight copies are re-made from the fp32 masters on resume,
// so nothing bf16 is lost with the process.
TEST_F(Train, KilledBf16RunResumesWithIdenticalLosses) {
  expect_killed_run_resumes_exactly(1, [&](const std::string& out) { return train_args(out, 150) + " --precision bf16"; },
                                    150);
}

// A DeepSeek-V4 model (4 mHC streams, V4 attention over a window shorter
// than the sequence, a token-routed first layer, clamped experts) learns and
// resumes bit for bit, in its release-format checkpoints.
TEST_F(Train, KilledV4RunResumesWithIdenticalLosses) {
  const std::string config = path("v4.json");
  std::ofstream(config) << R"({"model_type": "deepseek_v4", "vocab_size": 64, "hidden_size": 32,
    "num_hidden_layers": 2, "num_attention_heads": 4, "head_dim": 16, "qk_rope_head_dim": 8, "q_lora_rank": 16,
    "o_lora_rank": 16, "o_groups": 2, "sliding_window": 8, "moe_intermediate_size": 16, "n_routed_experts": 4,
    "num_experts_per_tok": 2, "num_hash_layers": 1, "swiglu_limit": 10.0, "num_nextn_predict_layers": 0,
    "rope_scaling": null, "max_position_embeddings": 256, "bias_update_speed": 0.01})";
  for (const char* precision : {"fp32", "bf16"}) {
    fs::remove_all(path("whole"));
    fs::remove_all(path("killed"));
    expect_killed_run_resumes_exactly(
        1,
        [&](const std::string& out) {
          return "train --config " + config + " --data " + path("data") + " --out " + out +
                 " --steps 150 --batch 4 --seq 32 --warmup 5 --lr 3e-3 --eval-every 0 --eval-windows 4"
                 " --checkpoint-every 5 --keep-last 2 --precision " + precision;
        },
        150);
    // The token-routed layer's table is the one init made: never trained.
    const Model trained = load_model(path("killed") + "/checkpoints/latest");
    const Model fresh = init_model(trained.config, 0);
    ASSERT_TRUE(trained.params.layers[0].moe.routes_by_token());
    EXPECT_EQ(trained.params.layers[0].moe.tid2eid, fresh.params.layers[0].moe.tid2eid) << precision;
  }
}

// Killed and resumed on 2 threads, on the config whose every parallel path
// runs threaded, compared with the run on 1.
TEST_F(Train, KilledRunOnTwoThreadsResumesWithTheOneThreadLosses) {
  const std::string config = threaded_config();
  expect_killed_run_resumes_exactly(
      2,
      [&](const std::string& out) {
        return "train --config " + config + " --data " + path("data") + " --out " + out +
               " --steps 24 --batch 8 --seq 128 --warmup 2 --lr 3e-3 --eval-every 0 --eval-windows 4"
               " --checkpoint-every 5 --keep-last 2 --precision fp32";
      },
      24);
}

// The per-step losses, written as text, must not depend on the thread count,
// bit for bit. 3 threads oversubscribe a 2-core machine, which changes
// nothing but the speed.
// In fp32 and in bf16 (gemm_bf16's fixed tiles of single-threaded
// primitives: oneDNN planning for several threads split K between them).
TEST_F(Train, LossesDoNotDependOnTheThreadCount) {
  const std::string config = threaded_config();
  for (const std::string precision : {"fp32", "bf16"}) {
    SCOPED_TRACE(precision);
    const std::string args = "train --config " + config + " --data " + path("data") +
                             " --steps 6 --batch 8 --seq 128 --warmup 2 --lr 3e-3 --eval-every 3 --eval-windows 8" +
                             " --checkpoint-every 100 --precision " + precision + " --out ";
    std::map<int64_t, std::string> want;
    for (int threads : {1, 2, 3}) {
      const std::string out = path(precision + "-run" + std::to_string(threads));
      std::string err;
      ASSERT_EQ(run(args + out, &err, threads), 0) << err;
      const auto got = losses(out);
      ASSERT_EQ(got.size(), 6u);
      if (threads == 1) {
        want = got;
        continue;
      }
      for (const auto& [step, loss] : want)
        EXPECT_EQ(got.at(step), loss) << "step " << step << ", " << threads << " threads";
      // Gradient norms, held-out losses, expert loads and gate means too.
      EXPECT_EQ(metrics_without_timing(out), metrics_without_timing(path(precision + "-run1"))) << threads << " threads";
    }
  }
}

// Mixed precision learns as well as fp32: the same run's final held-out
// loss within 1 % (the README measures the demo's 300 steps the same way).
// At lr 1e-3: at 3e-3 and 400 steps this tiny model's final loss moves by
// a few percent either way with the rounding (seed 0: bf16 5 % worse than
// fp32; seed 1: 3 % better), while at 1e-3 seeds 0-3 agree within 1 %.
TEST_F(Train, Bf16HeldOutLossIsWithinOnePercentOfFp32) {
  std::map<std::string, double> val;
  for (const char* precision : {"fp32", "bf16"}) {
    const std::string out = path(std::string("run_") + precision);
    std::string err;
    ASSERT_EQ(run("train --config " + tiny() + " --data " + path("data") + " --out " + out +
                      " --steps 300 --batch 8 --seq 32 --warmup 10 --lr 1e-3 --eval-every 0 --eval-windows 16"
                      " --checkpoint-every 1000 --precision " + precision,
                  &err),
              0)
        << err;
    std::ifstream in(out + "/metrics.jsonl");
    std::string line, last;
    while (std::getline(in, line)) last = line;
    val[precision] = nlohmann::json::parse(last).at("val_loss").get<double>();
  }
  std::printf("held-out loss: fp32 %.5f, bf16 %.5f\n", val["fp32"], val["bf16"]);
  EXPECT_LT(val["fp32"], 3.0) << "the run learned little; the comparison says nothing";
  EXPECT_NE(val["bf16"], val["fp32"]) << "the bf16 run ran in fp32";
  EXPECT_NEAR(val["bf16"], val["fp32"], 0.01 * val["fp32"]) << "held-out loss, bf16 vs fp32";
}

TEST_F(Train, DivergenceStopsAndKeepsTheLastGoodCheckpoint) {
  std::string err;
  const std::string args = "train --config " + tiny() + " --data " + path("data") + " --out " + path("run") +
                           " --steps 20 --batch 2 --seq 16 --warmup 0 --lr 1e30 --clip 0 --checkpoint-every 1";
  EXPECT_NE(run(args, &err), 0);
  EXPECT_NE(err.find("step "), std::string::npos) << err;
  EXPECT_NE(err.find("training stopped"), std::string::npos) << err;
  EXPECT_NE(err.find("last good checkpoint"), std::string::npos) << err;
  // The precision, machine and memory lines, progress lines (each ends in
  // \r on a terminal), then the error.
  EXPECT_EQ(err.rfind("precision: ", 0), 0u) << err;
  EXPECT_NE(err.find("\nmachine: sgemm "), std::string::npos) << err;
  EXPECT_NE(err.find("\nmemory of rank 0: weights "), std::string::npos) << err;
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 4 + std::count(err.begin(), err.end(), '\r')) << err;
  const std::string good = latest(path("run"));
  ASSERT_FALSE(good.empty());
  EXPECT_NE(err.find(good), std::string::npos) << err;
  EXPECT_TRUE(fs::exists(path("run") + "/checkpoints/" + good + "/model.safetensors"));
}

TEST_F(Train, BadInputIsOneLine) {
  std::string err;
  EXPECT_NE(run("train --config " + tiny() + " --data " + path("nowhere") + " --out " + path("r"), &err), 0);
  EXPECT_NE(err.find("nowhere"), std::string::npos) << err;
  EXPECT_NE(run("train --resume " + path("no_run"), &err), 0);
  EXPECT_NE(err.find("no_run"), std::string::npos) << err;

  // A corrupt checkpoint at --resume: an error, and the files stay as they were.
  ASSERT_EQ(run(train_args(path("run"), 5)), 0);
  const std::string ckpt = path("run") + "/checkpoints/" + latest(path("run")) + "/model.safetensors";
  fs::resize_file(ckpt, fs::file_size(ckpt) / 3);
  const auto size = fs::file_size(ckpt);
  EXPECT_NE(run("train --resume " + path("run") + " --steps 10", &err), 0);
  EXPECT_NE(err.find("cannot resume"), std::string::npos) << err;
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
  EXPECT_EQ(fs::file_size(ckpt), size);
  // A second run into the same directory is refused rather than overwriting it.
  EXPECT_NE(run(train_args(path("run"), 5), &err), 0);
  EXPECT_NE(err.find("already holds a run"), std::string::npos) << err;
  // An unknown precision, and a precision at --resume (a run keeps its own).
  EXPECT_NE(run(train_args(path("p"), 5) + " --precision fp16", &err), 0);
  EXPECT_NE(err.find("unknown precision 'fp16'"), std::string::npos) << err;
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
  EXPECT_NE(run("train --resume " + path("run") + " --precision fp32", &err), 0);
  EXPECT_NE(err.find("keeps the run's own precision"), std::string::npos) << err;
}

// --precision auto is bf16 exactly where the CPU has native bf16, and the
// run records what it used.
TEST_F(Train, AutoPrecisionFollowsTheCpuAndIsRecorded) {
  std::string err;
  ASSERT_EQ(run(train_args(path("run"), 2), &err), 0) << err;
  const std::string want = bf16_native() ? "bf16" : "fp32";
  EXPECT_EQ(err.rfind("precision: " + want, 0), 0u) << err;
  std::ifstream in(path("run") + "/train.json");
  EXPECT_EQ(nlohmann::json::parse(in).at("precision"), want);
}

TEST_F(Train, GradientAccumulationEqualsOneLargeBatch) {
  // 2 micro-batches of 4 windows read the same 8 windows as one batch of 8:
  // the first step's loss and gradient norm agree to rounding (the loss is
  // a mean of means, and the products' blocking depends on the row count:
  // equal bits on AVX-512 OpenBLAS, 5e-10 apart on AVX2). The sums differ in order (one product over 8 windows
  // against two of 4 added), and training amplifies that: AdamW's first
  // update is lr * sign(g), so a near-zero gradient's rounding flips it,
  // and by the third step the losses differ by about 5e-5.
  const std::string common = "train --config " + tiny() + " --data " + path("data") +
                             " --steps 3 --seq 32 --warmup 1 --eval-every 0 --eval-windows 2 --checkpoint-every 10";
  ASSERT_EQ(run(common + " --batch 8 --out " + path("one")), 0);
  ASSERT_EQ(run(common + " --batch 4 --grad-accum 2 --out " + path("two")), 0);
  const auto a = losses(path("one")), b = losses(path("two"));
  ASSERT_EQ(a.size(), 3u);
  ASSERT_EQ(b.size(), 3u);
  EXPECT_NEAR(std::stod(b.at(1)), std::stod(a.at(1)), 1e-8 * std::stod(a.at(1)));
  const double norm_one = first_metric(path("one"), "grad_norm"), norm_two = first_metric(path("two"), "grad_norm");
  EXPECT_NEAR(norm_two, norm_one, 1e-6 * norm_one);
  for (const auto& [step, loss] : a) EXPECT_NEAR(std::stod(b.at(step)), std::stod(loss), 1e-4) << "step " << step;
}

TEST_F(Train, ALongContextStageStartsFromACheckpointUnderYarn) {
  // Stage 1 at 32 tokens; stage 2 continues from its weights at 128 tokens
  // with YaRN stretching RoPE 4x (DeepSeek's long-context extension).
  const std::string stage1 = "train --config " + tiny() + " --data " + path("data") + " --out " + path("short") +
                             " --steps 30 --batch 4 --seq 32 --warmup 2 --eval-every 0 --eval-windows 2";
  ASSERT_EQ(run(stage1), 0);
  nlohmann::json cfg;
  {
    std::ifstream in(tiny());
    cfg = nlohmann::json::parse(in);
  }
  cfg["max_position_embeddings"] = 1024;
  cfg["rope_scaling"] = {{"type", "yarn"}, {"factor", 4}, {"original_max_position_embeddings", 256},
                         {"beta_fast", 32}, {"beta_slow", 1}, {"mscale", 1.0}, {"mscale_all_dim", 1.0}};
  {
    std::ofstream out(path("yarn.json"));
    out << cfg.dump(2);
  }
  auto stage2 = [&](const std::string& config, const std::string& out, const std::string& from) {
    return "train --config " + config + " --data " + path("data") + " --out " + path(out) +
           " --steps 3 --batch 2 --seq 128 --warmup 1 --lr 1e-3 --eval-every 0 --eval-windows 2" +
           (from.empty() ? "" : " --init-from " + from);
  };
  std::string err;
  ASSERT_EQ(run(stage2(path("yarn.json"), "long", path("short/checkpoints/latest")), &err), 0) << err;
  ASSERT_EQ(run(stage2(path("yarn.json"), "fresh", "")), 0);
  // The stage starts where the first ended, far below a fresh model.
  const double trained = std::stod(losses(path("short")).at(30)), continued = std::stod(losses(path("long")).at(1));
  const double fresh = std::stod(losses(path("fresh")).at(1));
  EXPECT_LT(continued, trained + 0.5 * (fresh - trained)) << trained << " " << continued << " " << fresh;
  std::ifstream in(path("long/train.json"));
  EXPECT_EQ(nlohmann::json::parse(in).at("init_from"), path("short/checkpoints/latest"));
  // A config whose tensors differ is one line naming the tensor.
  cfg["hidden_size"] = 48;
  {
    std::ofstream out(path("wide.json"));
    out << cfg.dump(2);
  }
  EXPECT_NE(run(stage2(path("wide.json"), "wide", path("short/checkpoints/latest")), &err), 0);
  EXPECT_NE(err.find("--init-from"), std::string::npos) << err;
  EXPECT_NE(err.find("has shape"), std::string::npos) << err;
}

TEST_F(Train, ExtendedRunKeepsItsHorizonAcrossResumes) {
  // 6 steps, extended to 9 and then to 12, equals one run of 12 steps that
  // decays over 6: the extension is written back, so a plain resume sees it,
  // and the added steps run at the floor of the schedule.
  const std::string base = "train --config " + tiny() + " --data " + path("data") +
                           " --batch 4 --seq 32 --warmup 2 --lr 3e-3 --min-lr-ratio 0.1 --eval-every 0 "
                           "--eval-windows 2 --checkpoint-every 3";
  ASSERT_EQ(run(base + " --steps 12 --decay-steps 6 --out " + path("whole")), 0);
  ASSERT_EQ(run(base + " --steps 6 --out " + path("ext")), 0);
  std::string err;
  ASSERT_EQ(run("train --resume " + path("ext") + " --steps 9", &err), 0) << err;
  auto options = [&] {
    std::ifstream in(path("ext") + "/train.json");
    return nlohmann::json::parse(in);
  };
  EXPECT_EQ(options().at("steps"), 9);
  EXPECT_EQ(options().at("decay_steps"), 6);
  EXPECT_NE(run("train --resume " + path("ext"), &err), 0);
  EXPECT_NE(err.find("already finished its 9 steps"), std::string::npos) << err;
  ASSERT_EQ(run("train --resume " + path("ext") + " --steps 12", &err), 0) << err;
  EXPECT_EQ(options().at("steps"), 12);
  const auto want = losses(path("whole")), got = losses(path("ext"));
  ASSERT_EQ(want.size(), 12u);
  ASSERT_EQ(got.size(), 12u);
  for (const auto& [step, loss] : want) EXPECT_EQ(got.at(step), loss) << "step " << step;
  std::ifstream in(path("ext") + "/metrics.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    if (j.at("step").get<int64_t>() > 6) {
      EXPECT_NEAR(j.at("lr").get<double>(), 3e-4, 1e-12) << line;
    }
  }
  // Moving the horizon on resume is written back too.
  ASSERT_EQ(run("train --resume " + path("ext") + " --steps 14 --decay-steps 14", &err), 0) << err;
  EXPECT_EQ(options().at("decay_steps"), 14);
}

TEST_F(Train, LatestIsAModelDirectoryAndOlderPointerFilesStillWork) {
  ASSERT_EQ(run(train_args(path("run"), 5)), 0);
  const std::string pointer = path("run") + "/checkpoints/latest";
  EXPECT_TRUE(fs::is_symlink(pointer));
  std::string err;
  EXPECT_EQ(run("eval --model " + pointer + " --data " + path("data") + " --seq 32", &err), 0) << err;
  // A run from before the link: checkpoints/latest is a file holding the name.
  fs::remove(pointer);
  std::ofstream(pointer) << "step_00000005\n";
  EXPECT_EQ(run("eval --model " + pointer + " --data " + path("data") + " --seq 32", &err), 0) << err;
  EXPECT_EQ(run("train --resume " + path("run") + " --steps 6", &err), 0) << err;
  EXPECT_EQ(latest(path("run")), "step_00000006");
}

TEST_F(Train, TimeBudgetStopsCleanlyAndFitsTheSchedule) {
  std::string err;
  const std::string args = "train --config " + tiny() + " --data " + path("data") + " --out " + path("run") +
                           " --steps 1000000 --batch 4 --seq 32 --warmup 2 --eval-every 0 --eval-windows 2"
                           " --checkpoint-every 100000 --time-budget 2s";
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(run(args, &err), 0) << err;
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(seconds, 30.0);  // 2 s of training plus start-up, on a loaded machine
  EXPECT_NE(err.find("time budget 2 s: "), std::string::npos) << err;
  std::ifstream opts(path("run") + "/train.json");
  const auto o = nlohmann::json::parse(opts);
  const int64_t steps = o.at("steps");
  EXPECT_LT(steps, 1000000);
  EXPECT_EQ(o.at("decay_steps"), steps);
  // The last step has a held-out evaluation and a checkpoint.
  const auto l = losses(path("run"));
  ASSERT_FALSE(l.empty());
  const int64_t last = l.rbegin()->first;
  EXPECT_LE(last, steps);
  char name[32];
  std::snprintf(name, sizeof name, "step_%08lld", (long long)last);
  EXPECT_EQ(latest(path("run")), name);
  std::ifstream in(path("run") + "/metrics.jsonl");
  std::string line, final_line;
  while (std::getline(in, line)) final_line = line;
  EXPECT_TRUE(nlohmann::json::parse(final_line).contains("val_loss")) << final_line;
  EXPECT_TRUE(nlohmann::json::parse(final_line).contains("gflops")) << final_line;
  EXPECT_NE(run("train --config " + tiny() + " --data " + path("data") + " --out " + path("bad") + " --time-budget 4x",
                &err),
            0);
  EXPECT_NE(err.find("--time-budget '4x' is not a duration"), std::string::npos) << err;
}

// The run's last evaluation is the measurement `memoe eval` makes (the
// whole held-out split), however few windows the periodic ones read; each
// line says what it covered.
TEST_F(Train, LastEvaluationIsWhatMemoeEvalMeasures) {
  std::string err;
  std::string args = train_args(path("run"), 10);
  args.replace(args.find("--eval-every 0"), 14, "--eval-every 5");
  ASSERT_EQ(run(args, &err), 0) << err;
  std::ifstream in(path("run") + "/metrics.jsonl");
  std::vector<nlohmann::json> evals;
  std::string line;
  while (std::getline(in, line))
    if (auto j = nlohmann::json::parse(line); j.contains("val_loss")) evals.push_back(j);
  ASSERT_EQ(evals.size(), 2u);
  EXPECT_EQ(evals[0].at("val_tokens").get<int64_t>(), 4 * 32);  // --eval-windows 4 at step 5
  EXPECT_FALSE(evals[0].at("val_whole_split").get<bool>());
  EXPECT_TRUE(evals[1].at("val_whole_split").get<bool>());
  const int64_t tokens = evals[1].at("val_tokens").get<int64_t>();
  EXPECT_GT(tokens, 4 * 32);
  EXPECT_NE(err.find("over " + std::to_string(tokens) + " tokens (the whole split)"), std::string::npos) << err;

  const testing::CliResult e =
      memoe("eval --model " + path("run") + "/checkpoints/latest --data " + path("data") + " --seq 32 --batch 4");
  ASSERT_EQ(e.status, 0) << e.err;
  long long eval_tokens = 0;
  double eval_loss = 0;
  ASSERT_EQ(std::sscanf(e.out.c_str(), "val split: %lld tokens, loss %lf nats/token", &eval_tokens, &eval_loss), 2)
      << e.out;
  EXPECT_EQ(eval_tokens, tokens);
  EXPECT_NEAR(eval_loss, evals[1].at("val_loss").get<double>(), 5e-5);  // printed to 4 decimals
  EXPECT_NE(e.out.find("(the whole val split, " + std::to_string(tokens / 32) + " windows of 32 tokens)"),
            std::string::npos)
      << e.out;
}

TEST(LrSchedule, WarmsUpThenDecaysToTheFloor) {
  LrSchedule s{1.0, 10, 110, 0.1};
  EXPECT_DOUBLE_EQ(s.at(0), 0.1);
  EXPECT_DOUBLE_EQ(s.at(9), 1.0);
  EXPECT_DOUBLE_EQ(s.at(10), 1.0);
  EXPECT_NEAR(s.at(60), 0.55, 1e-12);
  EXPECT_NEAR(s.at(110), 0.1, 1e-12);
  for (int i = 11; i < 110; ++i) EXPECT_LT(s.at(i), s.at(i - 1));
}

}  // namespace
}  // namespace memoe
