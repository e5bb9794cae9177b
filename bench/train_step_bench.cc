// One training step (forward, backward, AdamW) of a preset in the engine and
// in the PyTorch reference, side by side on the same batch with the same
// thread count; plus the engine's achieved GFLOP/s against this machine's
// sgemm peak (through the same BLAS, in the same run) and its peak RSS
// against the memoe params prediction.
//
//   build/memoe_bench [--config configs/small.json] [--batch 16] [--seq 256]
//                     [--steps 3] [--threads 2] [--rounds 3] [--no-reference]
//
// The machine is shared and noisy, so engine and reference are timed in
// alternating rounds and the median of the per-round ratios is reported.
#include <cblas.h>
#include <omp.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/process.h"
#include "core/rng.h"
#include "io/npy.h"
#include "kernels/linear.h"
#include "model/init.h"
#include "model/param_count.h"
#include "train/adamw.h"

using namespace memoe;

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double peak_rss_bytes() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_maxrss) * 1024.0;
}

double reference_tokens_per_s(const std::string& config, const std::string& ids_path, int batch, int seq, int steps,
                              int threads) {
  std::string cmd = "OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 " + std::string(MEMOE_SOURCE_DIR) +
                    "/reference/bench_step.py --config " + config + " --ids " + ids_path +
                    " --batch " + std::to_string(batch) + " --seq " + std::to_string(seq) + " --steps " +
                    std::to_string(steps) + " --threads " + std::to_string(threads);
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return 0;
  char line[4096] = {0};
  std::string out;
  while (fgets(line, sizeof line, p)) out += line;
  if (pclose(p) != 0) {
    std::fprintf(stderr, "reference benchmark failed: %s\n", out.c_str());
    return 0;
  }
  const char* key = std::strstr(out.c_str(), "\"tokens_per_s\":");
  return key ? std::atof(key + std::strlen("\"tokens_per_s\":")) : 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string config = std::string(MEMOE_SOURCE_DIR) + "/configs/small.json";
  int batch = 16, seq = 256, steps = 3, threads = 2, rounds = 3;
  bool with_reference = true;
  Precision precision = Precision::fp32;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--config") config = next();
    else if (a == "--batch") batch = std::atoi(next().c_str());
    else if (a == "--seq") seq = std::atoi(next().c_str());
    else if (a == "--steps") steps = std::atoi(next().c_str());
    else if (a == "--threads") threads = std::atoi(next().c_str());
    else if (a == "--rounds") rounds = std::atoi(next().c_str());
    else if (a == "--no-reference") with_reference = false;
    else if (a == "--precision") precision = parse_precision(next());
    else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      return 2;
    }
  }
  if (batch < 1 || seq < 2 || steps < 1 || threads < 1 || rounds < 1) {
    std::fprintf(stderr, "--batch, --steps, --threads, --rounds must be >= 1 and --seq >= 2\n");
    return 2;
  }
  memoe::keep_freed_memory_for_reuse();
  omp_set_num_threads(threads);
  openblas_set_num_threads(threads);
  try {
    const ModelConfig cfg = load_config(config);
    const ParamCount pc = count_params(cfg, seq);
    Model model = init_model(cfg, 0);
    model.params.set_precision(precision);
    ModelParams grads = model.make_gradients();
    AdamW opt(model, AdamWConfig{});
    std::vector<int64_t> ids(size_t(batch) * size_t(seq));
    Rng rng(1);
    for (auto& id : ids) id = int64_t(rng.below(uint64_t(cfg.vocab_size)));
    const auto targets = next_token_targets(ids.data(), batch, seq);
    const std::string ids_path = "/tmp/memoe_bench_ids_" + std::to_string(getpid()) + ".npy";
    write_npy_i64(ids_path, {batch, seq}, ids.data());

    ModelState state;
    double loss = 0;
    double optimizer_s = 0;
    auto step = [&] {
      grads.zero();
      loss = model_loss_and_grad(model, ids.data(), targets.data(), batch, seq, state, &grads);
      const double t_opt = now();
      opt.step(model, grads, 3e-4);
      std::vector<std::vector<int64_t>> loads(model.params.layers.size());
      for (size_t l = 0; l < loads.size(); ++l) loads[l] = state.layers[l].moe.expert_load;
      update_router_biases(model, loads);
      model.params.refresh_bf16_copies();
      optimizer_s += now() - t_opt;
    };
    step();  // warm-up
    std::printf("config %s: %.2f M params, batch %d x %d, %d threads, %d timed steps per round\n", config.c_str(),
                double(pc.total) / 1e6, batch, seq, threads, steps);
    const double tokens = double(batch) * seq;
    std::vector<double> engine_rates, ratios;
    for (int r = 0; r < rounds; ++r) {
      state.times = PartTimes{};
      optimizer_s = 0;
      const double t0 = now();
      for (int s = 0; s < steps; ++s) step();
      const double step_s = (now() - t0) / steps;
      engine_rates.push_back(tokens / step_s);
      std::printf("round %d: engine %7.0f tokens/s (%.3f s/step, loss %.4f)", r + 1, tokens / step_s, step_s, loss);
      if (with_reference) {
        const double ref = reference_tokens_per_s(config, ids_path, batch, seq, steps, threads);
        if (ref > 0) {
          ratios.push_back(tokens / step_s / ref);
          std::printf("   reference %7.0f tokens/s   ratio %.2fx", ref, ratios.back());
        }
      }
      std::printf("\n");
      std::fflush(stdout);
    }
    auto median = [](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      return v[v.size() / 2];
    };
    const double engine_tps = median(engine_rates);
    std::printf("engine     %10.0f tokens/s (median of %d rounds)\n", engine_tps, rounds);
    if (!ratios.empty())
      std::printf("ratio      %10.2fx engine / reference (median; PyTorch 1.13 with OMP_WAIT_POLICY=PASSIVE, "
                  "same batch, same threads)\n",
                  median(ratios));
    const double peak = measure_sgemm_gflops(1024);
    const double achieved = pc.train_flops_per_token * engine_tps / 1e9;
    const double rss = peak_rss_bytes();
    const double predicted = training_state_bytes(cfg, batch, seq);
    std::printf("last round, seconds per step by part (forward/backward):");
    for (int p = 0; p < PartTimes::kParts; ++p)
      std::printf("  %s %.3f/%.3f", PartTimes::name(p), state.times.forward[p] / steps, state.times.backward[p] / steps);
    std::printf("  optimizer %.3f\n", optimizer_s / steps);
    std::printf("compute    %10.2f GFLOP/s achieved (%.1f MFLOP/token train) = %.1f%% of sgemm peak %.2f GFLOP/s\n",
                achieved, pc.train_flops_per_token / 1e6, 100.0 * achieved / peak, peak);
    std::printf("memory     peak RSS %.1f MiB, predicted %.1f MiB (weights+grads+AdamW+activations), ratio %.2f\n",
                rss / 1048576.0, predicted / 1048576.0, rss / predicted);
    std::remove(ids_path.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "memoe_bench: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
