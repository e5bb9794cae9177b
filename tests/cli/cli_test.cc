// The memoe binary end to end: each bad input gives one line naming the
// problem and a non-zero exit; good input writes what it promises.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "cli_runner.h"
#include "io/npy.h"
#include "kernels/linear.h"
#include "io/safetensors.h"

namespace memoe {
namespace {

namespace fs = std::filesystem;

class Cli : public testing::CliTest {
 protected:
  std::string write(const std::string& name, const std::string& text) {
    io_testing::write_bytes(path(name), text);
    return path(name);
  }
  static std::string tiny() { return std::string(MEMOE_SOURCE_DIR) + "/configs/tiny.json"; }

  // One line on stderr that contains `needle`, and a non-zero exit.
  static void expect_one_line_error(const testing::CliResult& r, const std::string& needle) {
    EXPECT_NE(r.status, 0);
    EXPECT_NE(r.status, -1) << "crashed";
    EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
};

TEST_F(Cli, ParamsPrintsTheOneTrillionPreset) {
  testing::CliResult r = memoe("params " + std::string(MEMOE_SOURCE_DIR) + "/configs/v4-1t.json");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("total parameters        0.999 T"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("active per token        37.635 B"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("AdamW state"), std::string::npos);
}

TEST_F(Cli, InitThenLogitsWritesBLV) {
  ASSERT_EQ(memoe("init " + tiny() + " --out " + path("m") + " --seed 3").status, 0);
  EXPECT_TRUE(fs::exists(path("m/config.json")));
  testing::CliResult r = memoe("logits --model " + path("m") + " --ids '1,2,3;4,5,6' --out " + path("x.npy"));
  ASSERT_EQ(r.status, 0) << r.err;
  NpyArray a = read_npy(path("x.npy"));
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3, 64}));
}

// --precision bf16 runs the same model with bf16 products: close to the
// fp32 logits (tests/model/mixed_precision_test.cc holds the tolerance's
// reasoning), not equal to them; an unknown precision is one line.
TEST_F(Cli, LogitsInBf16AreNearTheFp32Ones) {
  ASSERT_EQ(memoe("init " + tiny() + " --out " + path("m") + " --seed 3").status, 0);
  const std::string ids = " --ids '1,2,3,4,5,6,7,8;9,10,11,12,13,14,15,16'";
  ASSERT_EQ(memoe("logits --model " + path("m") + ids + " --out " + path("fp32.npy")).status, 0);
  testing::CliResult r = memoe("logits --model " + path("m") + ids + " --out " + path("bf16.npy") + " --precision bf16");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.err, "");
  const Tensor a = read_npy(path("fp32.npy")).to_tensor(), b = read_npy(path("bf16.npy")).to_tensor();
  ASSERT_EQ(a.numel(), b.numel());
  double max_diff = 0, sum2 = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    max_diff = std::max(max_diff, double(std::fabs(a[i] - b[i])));
    sum2 += double(a[i]) * double(a[i]);
  }
  const double rms = std::sqrt(sum2 / double(a.numel()));
  EXPECT_GT(max_diff, 0.0);
  EXPECT_LT(max_diff, rms / 16) << "rms " << rms;
  expect_one_line_error(memoe("logits --model " + path("m") + ids + " --out " + path("x.npy") + " --precision fp8"),
                        "unknown precision 'fp8'");
}

// memoe machine names the path auto takes: bf16 exactly where the CPU has
// native bf16, and fp32 once oneDNN is capped below it.
TEST_F(Cli, MachineSaysWhatAutoPicks) {
  testing::CliResult r = memoe("machine");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find(std::string("--precision auto        ") + (bf16_native() ? "bf16" : "fp32")), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("GFLOP/s"), std::string::npos) << r.out;
  // Capped for this one command; a cap already set (Bf16.Avx2Fallback sets
  // one for the whole process) stays for the commands of later tests.
  const char* before = std::getenv("ONEDNN_MAX_CPU_ISA");
  const std::string kept = before ? before : "";
  setenv("ONEDNN_MAX_CPU_ISA", "AVX2", 1);
  r = memoe("machine");
  if (before) setenv("ONEDNN_MAX_CPU_ISA", kept.c_str(), 1);
  else unsetenv("ONEDNN_MAX_CPU_ISA");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("--precision auto        fp32"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("native bf16             no"), std::string::npos) << r.out;
}

// --decode P goes through the KV cache (prefill P, then one token at a
// time) and writes the full forward's logits, up to fp32 summation order.
TEST_F(Cli, LogitsThroughTheCacheMatchTheFullForward) {
  const std::string model = std::string(MEMOE_SOURCE_DIR) + "/tests/fixtures/mla_moe_engram";
  const std::string ids = " --ids '1,2,3,4,5,6,7,8,9,10;11,12,13,14,15,16,17,18,19,20'";
  ASSERT_EQ(memoe("logits --model " + model + ids + " --out " + path("full.npy")).status, 0);
  for (int prefill : {0, 1, 6, 10}) {
    testing::CliResult r = memoe("logits --model " + model + ids + " --out " + path("dec.npy") + " --decode " +
                                 std::to_string(prefill));
    ASSERT_EQ(r.status, 0) << r.err;
    const Tensor a = read_npy(path("full.npy")).to_tensor(), b = read_npy(path("dec.npy")).to_tensor();
    ASSERT_EQ(a.numel(), b.numel());
    double err = 0, scale = 0;
    for (int64_t i = 0; i < a.numel(); ++i) {
      err = std::max(err, double(std::fabs(a[i] - b[i])));
      scale = std::max(scale, double(std::fabs(a[i])));
    }
    EXPECT_LE(err, 1e-4 * scale) << "--decode " << prefill;
  }
  expect_one_line_error(memoe("logits --model " + model + ids + " --out " + path("x.npy") + " --decode 11"),
                        "longer than the sequences");
}

TEST_F(Cli, ConfigErrorsNameTheKey) {
  expect_one_line_error(memoe("params " + path("missing.json")), "missing.json");
  expect_one_line_error(memoe("params " + write("bad.json", "{\"vocab_size\": ")), "not valid JSON");
  std::string text = io_testing::read_bytes(tiny());
  auto with = [&](const std::string& from, const std::string& to) {
    std::string t = text;
    t.replace(t.find(from), from.size(), to);
    return write("c.json", t);
  };
  expect_one_line_error(memoe("params " + with("\"num_experts_per_tok\": 2", "\"num_experts_per_tok\": 9")),
                        "num_experts_per_tok");
  expect_one_line_error(memoe("params " + with("\"layer_ids\": [1]", "\"layer_ids\": [3]")), "engram.layer_ids");
  expect_one_line_error(memoe("params " + with("\"hc_mult\": 1", "\"hc_mult\": 4")), "hc_mult");
  expect_one_line_error(memoe("params " + with("\"n_group\": 2", "\"n_group\": 3")), "n_group");
  expect_one_line_error(memoe("params " + with("\"hidden_size\": 32", "\"hidden_size\": \"big\"")), "hidden_size");
  expect_one_line_error(memoe("params " + with("\"scoring_func\": \"sigmoid\"", "\"scoring_func\": \"relu\"")),
                        "scoring_func");
}

TEST_F(Cli, CheckpointProblemsAreOneLine) {
  ASSERT_EQ(memoe("init " + tiny() + " --out " + path("m")).status, 0);
  // A missing tensor: rewrite the file without one.
  {
    SafetensorsFile f = SafetensorsFile::open(path("m/model.safetensors"));
    SafetensorsWriter w;
    for (const std::string& name : f.names()) {
      if (name == "model.norm.weight") continue;
      if (f.info(name).dtype == DType::I64) {
        auto v = f.read_i64(name);
        w.add_i64(name, f.info(name).shape, v.data());
      } else {
        w.add_f32(name, f.read_f32(name));
      }
    }
    fs::create_directories(path("holes"));
    fs::copy_file(path("m/config.json"), path("holes/config.json"));
    w.write(path("holes/model.safetensors"));
  }
  expect_one_line_error(memoe("logits --model " + path("holes") + " --ids 1,2 --out " + path("x.npy")),
                        "model.norm.weight");
  // A truncated file.
  fs::create_directories(path("cut"));
  fs::copy_file(path("m/config.json"), path("cut/config.json"));
  fs::copy_file(path("m/model.safetensors"), path("cut/model.safetensors"));
  fs::resize_file(path("cut/model.safetensors"), fs::file_size(path("cut/model.safetensors")) / 2);
  expect_one_line_error(memoe("logits --model " + path("cut") + " --ids 1,2 --out " + path("x.npy")),
                        "model.safetensors");
  expect_one_line_error(memoe("logits --model " + path("nowhere") + " --ids 1,2 --out " + path("x.npy")), "nowhere");
}

TEST_F(Cli, BadIdsAndUnwritableOutput) {
  ASSERT_EQ(memoe("init " + tiny() + " --out " + path("m")).status, 0);
  expect_one_line_error(memoe("logits --model " + path("m") + " --ids 1,64 --out " + path("x.npy")), "token id 64");
  expect_one_line_error(memoe("logits --model " + path("m") + " --ids 1,-2 --out " + path("x.npy")), "token id -2");
  expect_one_line_error(memoe("logits --model " + path("m") + " --ids 1,x --out " + path("x.npy")), "'x'");
  expect_one_line_error(memoe("logits --model " + path("m") + " --ids '1,2;3' --out " + path("x.npy")),
                        "same length");
  expect_one_line_error(memoe("logits --model " + path("m") + " --ids 1,2 --out /no/such/dir/x.npy"),
                        "/no/such/dir/x.npy");
  expect_one_line_error(memoe("init " + tiny() + " --out /proc/memoe_cannot"), "/proc/memoe_cannot");
  EXPECT_FALSE(fs::exists(path("x.npy")));
}

// memoe plan: DeepSeek-V3's published cost gives an MFU, the 1T preset a
// ranked list of layouts, a machine too small a clear "nothing fits", and
// bad input one line.
TEST_F(Cli, PlanCalibratesOnDeepSeekV3AndPlansTheOneTrillionPreset) {
  const std::string dir = std::string(MEMOE_SOURCE_DIR) + "/configs/";
  testing::CliResult r = memoe("plan " + dir + "deepseek-v3.json --devices 2048 --device h800 --layout dp128,pp16,ep64 "
                               "--calibrate 180000");
  ASSERT_EQ(r.status, 0) << r.err;
  double mfu = 0;
  const size_t at = r.out.find("implies MFU ");
  ASSERT_NE(at, std::string::npos) << r.out;
  ASSERT_EQ(std::sscanf(r.out.c_str() + at, "implies MFU %lf", &mfu), 1);
  EXPECT_GT(mfu, 0.1);
  EXPECT_LT(mfu, 1.0);
  r = memoe("plan " + dir + "v4-1t.json --devices 2048 --device 910b --top 2");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("layouts fit; the fastest:"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("DOES NOT FIT"), std::string::npos) << r.out;
  // --json: one object a layout, the expert all-to-all volume a hand
  // computation of 4 (passes) * 2 (bf16) * N_r * k * d * (E-1)/E per MoE
  // layer: small, dp4 ep2, 8 x 256 tokens: N_r 512, k 2, d 256, 5 MoE layers.
  r = memoe("plan " + dir + "small.json --devices 4 --layout dp4,pp1,ep2 --global-batch 8 --micro-batch 2 --seq 256 "
            "--json");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("\"expert_parallel\":" + std::to_string(int64_t(4) * 2 * 512 * 2 * 256 / 2 * 5) + ".0"),
            std::string::npos)
      << r.out;
  r = memoe("plan " + dir + "v4-1t.json --devices 8 --global-batch 64");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("nothing fits: the leanest layout"), std::string::npos) << r.out;
  for (const auto& [args, message] : std::vector<std::pair<std::string, std::string>>{
           {"v4-1t.json --devices 16 --device tpu", "unknown device preset 'tpu'"},
           {"v4-1t.json --devices 16 --calibrate 100", "--calibrate needs the run's --layout"},
           {"v4-1t.json --devices 16 --layout dp4", "needs dpN, ppN and epN"},
           {"v4-1t.json --devices 16 --layout dp4,pp2,ep1", "is not the 16 devices"},
           {"v4-1t.json --devices 16 --layout dp8,pp2,ep1,engram=shardd", "unknown item 'engram=shardd'"},
           {"v4-1t.json --devices 16 --mfu 1.5", "--mfu must be in (0, 1]"}}) {
    const testing::CliResult bad = memoe("plan " + dir + args);
    EXPECT_NE(bad.status, 0) << args;
    EXPECT_NE(bad.err.find(message), std::string::npos) << args << ": " << bad.err;
    EXPECT_EQ(std::count(bad.err.begin(), bad.err.end(), '\n'), 1) << args << ": " << bad.err;
  }
}

}  // namespace
}  // namespace memoe
