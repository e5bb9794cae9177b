// One training step (forward, backward, AdamW) of a preset, side by side on
// the same batch with the same thread count: the engine in fp32 and in bf16
// mixed precision, and the PyTorch reference in fp32 and under
// torch.autocast("cpu", dtype=torch.bfloat16) (its fair bf16 peer). Also
// the fp32 and bf16 matrix-product peaks of this machine through the
// engine's libraries (OpenBLAS sgemm, oneDNN bf16), in the same run, the
// share of the step the engine spends in its products and their rate, and
// its peak RSS against the memoe params prediction, for each precision.
//
//   build/memoe_bench [--config configs/small.json] [--batch 16] [--seq 256]
//                     [--steps 3] [--threads 2] [--rounds 3] [--no-reference]
//                     [--precision fp32|bf16|both] [--compare CONFIG2]
//
// --compare times a second config's engine in the same rounds (e.g. MoE
// alone against Engram + MoE at matched parameters: docs/experiments/
// engram-cost.md), on the same ids, and prints the ratio and both configs'
// seconds per part.
//
// The machine is shared and noisy, so the contenders run in turn in every
// round, each in its own process (so that each peak RSS is its own), and
// medians of the per-round ratios are reported.
#include <omp.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "child_process.h"
#include "core/error.h"
#include "core/process.h"
#include "core/rng.h"
#include "io/npy.h"
#include "kernels/linear.h"
#include "kernels/matmul_bf16.h"
#include "model/init.h"
#include "model/param_count.h"
#include "train/adamw.h"

using namespace memoe;
using json = nlohmann::json;
using bench::run_json;

namespace {

struct Options {
  std::string config = std::string(MEMOE_SOURCE_DIR) + "/configs/small.json";
  int batch = 16, seq = 256, steps = 3, threads = 2, rounds = 3;
  bool with_reference = true;
  std::string precision = "both";
  std::string compare;  // a second config timed beside the first
  std::string child;  // internal: run the engine in this precision and print one JSON line
  std::string ids_path;
};

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double peak_rss_bytes() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_maxrss) * 1024.0;
}

// The engine's side, in a child process: one warm-up step, then `steps` timed.
int run_engine(const Options& o) {
  const Precision precision = parse_precision(o.child);
  const ModelConfig cfg = load_config(o.config);
  const ParamCount pc = count_params(cfg, o.seq);
  Model model = init_model(cfg, 0);
  model.params.set_precision(precision);
  ModelParams grads = model.make_gradients();
  AdamW opt(model, AdamWConfig{});
  const std::vector<int64_t> ids = read_npy(o.ids_path).to_i64();
  MEMOE_CHECK(int64_t(ids.size()) == int64_t(o.batch) * o.seq, o.ids_path, " does not hold batch x seq ids");
  const auto targets = next_token_targets(ids.data(), o.batch, o.seq);
  ModelState state;
  double loss = 0, optimizer_s = 0;
  auto step = [&] {
    grads.zero();
    loss = model_loss_and_grad(model, ids.data(), targets.data(), o.batch, o.seq, state, &grads);
    const double t_opt = now();
    opt.step(model, grads, 3e-4);
    std::vector<std::vector<int64_t>> loads(model.params.layers.size());
    for (size_t l = 0; l < loads.size(); ++l) loads[l] = state.layers[l].moe.expert_load;
    update_router_biases(model, loads);
    model.params.refresh_bf16_copies();
    optimizer_s += now() - t_opt;
  };
  step();  // warm-up: allocations, oneDNN primitives, thread pools
  state.times = PartTimes{};
  optimizer_s = 0;
  set_product_profiling(true);
  const double t0 = now();
  for (int s = 0; s < o.steps; ++s) step();
  const double step_s = (now() - t0) / o.steps;
  const ProductProfile products = product_profile();
  set_product_profiling(false);
  json parts = json::object();
  for (int p = 0; p < PartTimes::kParts; ++p)
    parts[PartTimes::name(p)] = {state.times.forward[p] / o.steps, state.times.backward[p] / o.steps};
  parts["optimizer"] = {optimizer_s / o.steps, 0.0};
  const json out = {{"tokens_per_s", double(o.batch) * o.seq / step_s},
                    {"step_s", step_s},
                    {"loss", loss},
                    {"product_s", products.seconds / o.steps},
                    {"product_flops", products.flops / o.steps},
                    {"train_flops", pc.train_flops_per_token * o.batch * o.seq},
                    {"rss_bytes", peak_rss_bytes()},
                    {"predicted_bytes", training_state_bytes(cfg, o.batch, o.seq, precision)},
                    {"parts", parts}};
  std::printf("%s\n", out.dump().c_str());
  return 0;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Contender {
  std::string name, command;
  std::vector<double> rates;  // tokens/s per round (0: failed)
  json last;                  // the engine's last report
};

std::string stem(const std::string& path) {
  const size_t slash = path.find_last_of('/'), dot = path.find_last_of('.');
  const size_t from = slash == std::string::npos ? 0 : slash + 1;
  return path.substr(from, dot == std::string::npos || dot < from ? std::string::npos : dot - from);
}

int run_bench(const Options& o) {
  const ModelConfig cfg = load_config(o.config);
  const ParamCount pc = count_params(cfg, o.seq);
  int64_t vocab = cfg.vocab_size;  // ids valid for both configs
  if (!o.compare.empty()) vocab = std::min(vocab, load_config(o.compare).vocab_size);
  std::vector<int64_t> ids(size_t(o.batch) * size_t(o.seq));
  Rng rng(1);
  for (auto& id : ids) id = int64_t(rng.below(uint64_t(vocab)));
  const std::string ids_path = "/tmp/memoe_bench_ids_" + std::to_string(getpid()) + ".npy";
  write_npy_i64(ids_path, {o.batch, o.seq}, ids.data());

  const std::string shape = " --config " + o.config + " --batch " + std::to_string(o.batch) + " --seq " +
                            std::to_string(o.seq) + " --steps " + std::to_string(o.steps);
  const std::string env = "OMP_NUM_THREADS=" + std::to_string(o.threads) + " OMP_WAIT_POLICY=PASSIVE ";
  char self[4096] = {0};  // the engine's child is this binary
  MEMOE_CHECK(readlink("/proc/self/exe", self, sizeof self - 1) > 0, "cannot find this benchmark's own binary");
  std::vector<Contender> contenders;
  const std::string shape2 = " --config " + o.compare + shape.substr(shape.find(" --batch"));
  for (const char* p : {"fp32", "bf16"})
    if (o.precision == "both" || o.precision == p) {
      contenders.push_back(
          {std::string("engine ") + p, env + self + " --child " + p + " --ids " + ids_path + shape, {}, {}});
      if (!o.compare.empty())
        contenders.push_back(
            {stem(o.compare) + " " + p, env + self + " --child " + p + " --ids " + ids_path + shape2, {}, {}});
    }
  if (o.with_reference) {
    const std::string ref = env + "/usr/bin/python3 " + std::string(MEMOE_SOURCE_DIR) + "/reference/bench_step.py" +
                            shape + " --ids " + ids_path + " --threads " + std::to_string(o.threads);
    contenders.push_back({"PyTorch fp32", ref, {}, {}});
    contenders.push_back({"PyTorch bf16 autocast", ref + " --autocast", {}, {}});
  }

  omp_set_num_threads(o.threads);
  std::printf("config %s: %.2f M params, batch %d x %d, %d threads, %d timed steps per round, %d rounds\n",
              o.config.c_str(), double(pc.total) / 1e6, o.batch, o.seq, o.threads, o.steps, o.rounds);
  if (!o.compare.empty())
    std::printf("compared with %s: %.2f M params\n", o.compare.c_str(),
                double(count_params(load_config(o.compare), o.seq).total) / 1e6);
  std::printf("bf16 products: %s; sgemm on OpenBLAS %s\n", bf16_description().c_str(), openblas_core_name().c_str());
  for (int r = 0; r < o.rounds; ++r) {
    std::printf("round %d:", r + 1);
    for (Contender& c : contenders) {
      const json j = run_json(c.command);
      const double rate = j.is_object() ? j.value("tokens_per_s", 0.0) : 0.0;
      c.rates.push_back(rate);
      if (j.is_object() && j.contains("parts")) c.last = j;
      std::printf("  %s %.0f", c.name.c_str(), rate);
      std::fflush(stdout);
    }
    std::printf("  (tokens/s)\n");
  }
  std::remove(ids_path.c_str());

  // Peaks through the same libraries, same threads, after the rounds.
  const double sgemm_peak = measure_sgemm_gflops(2048, 5), bf16_peak = measure_gemm_bf16_gflops(2048, 5);
  std::printf("matrix-product peaks (2048^3, best of 5): sgemm %.1f GFLOP/s, bf16 %.1f GFLOP/s (%.2fx)\n", sgemm_peak,
              bf16_peak, bf16_peak / sgemm_peak);
  for (const Contender& c : contenders)
    std::printf("%-22s %8.0f tokens/s (median of %d rounds)\n", c.name.c_str(), median(c.rates), o.rounds);
  auto find = [&](const std::string& name) -> const Contender* {
    for (const Contender& c : contenders)
      if (c.name == name) return &c;
    return nullptr;
  };
  auto ratio = [&](const char* a, const char* b) {
    const Contender *x = find(a), *y = find(b);
    if (!x || !y) return;
    std::vector<double> per_round;
    std::string list;
    for (size_t r = 0; r < x->rates.size(); ++r)
      if (x->rates[r] > 0 && y->rates[r] > 0) {
        per_round.push_back(x->rates[r] / y->rates[r]);
        list += (list.empty() ? "" : " / ") + std::to_string(per_round.back()).substr(0, 4);
      }
    if (!per_round.empty())
      std::printf("ratio  %-14s / %-22s %5.2fx median (rounds: %s)\n", a, b, median(per_round), list.c_str());
  };
  ratio("engine bf16", "PyTorch fp32");
  ratio("engine bf16", "PyTorch bf16 autocast");
  ratio("engine bf16", "engine fp32");
  ratio("engine fp32", "PyTorch fp32");
  ratio("PyTorch bf16 autocast", "PyTorch fp32");
  for (const char* p : {"fp32", "bf16"}) ratio((stem(o.compare) + " " + p).c_str(), (std::string("engine ") + p).c_str());
  for (const Contender& contender : contenders) {
    const Contender* c = &contender;
    if (c->last.is_null()) continue;
    const std::string p = c->name.substr(c->name.rfind(' ') + 1);
    const json& j = c->last;
    const double peak = p == "bf16" ? bf16_peak : sgemm_peak;
    const double product_rate = j["product_flops"].get<double>() / j["product_s"].get<double>() / 1e9;
    std::printf("%s, last round: step %.3f s, products %.3f s (%.0f%% of the step) at %.1f GFLOP/s = %.0f%% of "
                "the %s peak; whole step %.1f GFLOP/s\n",
                c->name.c_str(), j["step_s"].get<double>(), j["product_s"].get<double>(),
                100 * j["product_s"].get<double>() / j["step_s"].get<double>(), product_rate,
                100 * product_rate / peak, p == "bf16" ? "bf16" : "sgemm",
                j["train_flops"].get<double>() / j["step_s"].get<double>() / 1e9);
    std::printf("  seconds per step by part (forward/backward):");
    for (const auto& [name, fb] : j["parts"].items())
      std::printf("  %s %.3f/%.3f", name.c_str(), fb[0].get<double>(), fb[1].get<double>());
    std::printf("\n  memory: peak RSS %.1f MiB, predicted %.1f MiB (memoe params), ratio %.2f\n",
                j["rss_bytes"].get<double>() / 1048576.0, j["predicted_bytes"].get<double>() / 1048576.0,
                j["rss_bytes"].get<double>() / j["predicted_bytes"].get<double>());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  restart_with_defaults(argv, kernel_environment_defaults());
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--config") o.config = next();
    else if (a == "--batch") o.batch = std::atoi(next().c_str());
    else if (a == "--seq") o.seq = std::atoi(next().c_str());
    else if (a == "--steps") o.steps = std::atoi(next().c_str());
    else if (a == "--threads") o.threads = std::atoi(next().c_str());
    else if (a == "--rounds") o.rounds = std::atoi(next().c_str());
    else if (a == "--no-reference") o.with_reference = false;
    else if (a == "--precision") o.precision = next();
    else if (a == "--compare") o.compare = next();
    else if (a == "--child") o.child = next();
    else if (a == "--ids") o.ids_path = next();
    else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      return 2;
    }
  }
  if (o.batch < 1 || o.seq < 2 || o.steps < 1 || o.threads < 1 || o.rounds < 1) {
    std::fprintf(stderr, "--batch, --steps, --threads, --rounds must be >= 1 and --seq >= 2\n");
    return 2;
  }
  if (o.precision != "both" && o.precision != "fp32" && o.precision != "bf16") {
    std::fprintf(stderr, "--precision must be fp32, bf16 or both\n");
    return 2;
  }
  memoe::keep_freed_memory_for_reuse();
  try {
    return o.child.empty() ? run_bench(o) : run_engine(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "memoe_bench: error: %s\n", e.what());
    return 1;
  }
}
