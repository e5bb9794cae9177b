// Prefill and decode through the KV cache against recomputing the whole
// sequence for every new token, on one model, same threads, in one run:
//
//   build/memoe_decode_bench [--config configs/small.json] [--prompt 256]
//                            [--tokens 64] [--threads 2] [--rounds 3]
//                            [--precision fp32|bf16] [--batch 1] [--reference]
//
// --reference also times the PyTorch reference's own KV cache
// (reference/decode.py, Debian's python3-torch) on the same weights, prompt
// length, new tokens and threads: fp32, or bf16 under torch.autocast.
// Tokens are chosen greedily from random-init logits (the speed does not
// depend on what they are). --batch S decodes S sequences together.
// In bf16 the model is written as a BF16 checkpoint (under build/) and
// decoded from its mapping, the weights read as stored (bf16, widened in the
// kernels). Decode is bound by memory bandwidth: the run also measures the
// read bandwidth (STREAM-style, same threads) and prints decode tokens/s
// beside the limit bandwidth / bytes of active weights per token.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "child_process.h"
#include "core/error.h"
#include "core/process.h"
#include "core/rng.h"
#include "kernels/bandwidth.h"
#include "kernels/linear.h"
#include "model/checkpoint.h"
#include "model/inference.h"
#include "model/param_count.h"
#include "model/init.h"

using namespace memoe;

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

int64_t argmax(const float* row, int64_t n) { return int64_t(std::max_element(row, row + n) - row); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  std::string config = std::string(MEMOE_SOURCE_DIR) + "/configs/small.json", precision = "fp32";
  int prompt = 256, tokens = 64, threads = 2, rounds = 3, batch = 1;
  bool reference = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--config") config = next();
    else if (a == "--prompt") prompt = std::atoi(next().c_str());
    else if (a == "--tokens") tokens = std::atoi(next().c_str());
    else if (a == "--threads") threads = std::atoi(next().c_str());
    else if (a == "--rounds") rounds = std::atoi(next().c_str());
    else if (a == "--batch") batch = std::atoi(next().c_str());
    else if (a == "--precision") precision = next();
    else if (a == "--reference") reference = true;
    else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      return 2;
    }
  }
  if (prompt < 1 || tokens < 1 || threads < 1 || rounds < 1 || batch < 1) {
    std::fprintf(stderr, "--prompt, --tokens, --threads, --rounds and --batch must be >= 1\n");
    return 2;
  }
  restart_with_defaults(argv, kernel_environment_defaults());
  keep_freed_memory_for_reuse();
  omp_set_num_threads(threads);
  try {
    const ModelConfig cfg = load_config(config);
    const Precision p = parse_precision(precision);
    Model m = init_model(cfg, 0);
    if (p == Precision::bf16) {
      const std::string dir = std::string(MEMOE_BINARY_DIR) + "/decode_bench_model";
      save_model(m, dir, DType::BF16);
      LoadOptions load;
      load.weights = WeightStorage::mapped;
      m = load_model(dir, load);
    }
    m.params.set_precision(p);
    const double bandwidth = measure_read_bandwidth();
    omp_set_num_threads(1);
    const double bandwidth_one = measure_read_bandwidth();
    omp_set_num_threads(threads);
    const double weight_bytes = double(count_params(cfg, 1).active_matmul) * (p == Precision::bf16 ? 2.0 : 4.0);
    const int64_t V = cfg.vocab_size;
    std::vector<int64_t> ids(static_cast<size_t>(prompt));
    Rng rng(3);
    for (auto& id : ids) id = int64_t(rng.below(uint64_t(V)));
    std::printf("config %s, %s, prompt %d tokens, %d new tokens, batch %d, %d threads\n", config.c_str(),
                precision.c_str(), prompt, tokens, batch, threads);
    // The PyTorch reference reads an F32 checkpoint of the same weights.
    std::string reference_command;
    if (reference) {
      const std::string dir = std::string(MEMOE_BINARY_DIR) + "/decode_bench_model_f32";
      save_model(init_model(cfg, 0), dir);
      reference_command = "OMP_NUM_THREADS=" + std::to_string(threads) + " OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 " +
                          std::string(MEMOE_SOURCE_DIR) + "/reference/decode.py --model " + dir + " --prompt " +
                          std::to_string(prompt) + " --tokens " + std::to_string(tokens) + " --threads " +
                          std::to_string(threads) + (p == Precision::bf16 ? " --autocast" : "");
    }
    std::vector<double> prefill_rates, decode_rates, recompute_rates, ref_prefill, ref_decode;
    int64_t cache_bytes = 0;
    for (int r = 0; r < rounds; ++r) {
      // Through the cache: each sequence prefilled, then all decoded together.
      std::vector<SequenceState> seqs;
      std::vector<int64_t> next(static_cast<size_t>(batch));
      Tensor logits;
      double t0 = now();
      for (int s = 0; s < batch; ++s) {
        seqs.push_back(new_sequence(m));
        feed_tokens(m, seqs.back(), ids.data(), prompt, 256, Logits::Last, logits);
        next[size_t(s)] = argmax(logits.data(), V);
      }
      prefill_rates.push_back(double(prompt) * batch / (now() - t0));
      std::vector<SequenceState*> active;
      for (SequenceState& s : seqs) active.push_back(&s);
      t0 = now();
      for (int t = 0; t < tokens; ++t) {
        decode_step(m, active, next.data(), logits);
        for (int s = 0; s < batch; ++s) next[size_t(s)] = argmax(logits.data() + int64_t(s) * V, V);
      }
      decode_rates.push_back(double(tokens) * batch / (now() - t0));
      cache_bytes = seqs[0].cache_bytes();
      // Recomputation: the whole sequence for every new token (one sequence;
      // a few tokens suffice for its rate).
      std::vector<int64_t> seq = ids;
      ModelState st;
      const int steps = std::min(tokens, 8);
      t0 = now();
      for (int t = 0; t < steps; ++t) {
        model_forward(m, seq.data(), 1, int64_t(seq.size()), st);
        seq.push_back(argmax(st.logits.data() + (int64_t(seq.size()) - 1) * V, V));
      }
      recompute_rates.push_back(double(steps) / (now() - t0));
      std::printf("round %d: prefill %.0f tokens/s, decode %.0f tokens/s, recompute %.1f tokens/s", r + 1,
                  prefill_rates.back(), decode_rates.back(), recompute_rates.back());
      if (reference) {
        const nlohmann::json j = bench::run_json(reference_command);
        MEMOE_CHECK(j.is_object(), "the PyTorch reference failed (needs /usr/bin/python3 with torch)");
        ref_prefill.push_back(j.value("prefill_tokens_per_s", 0.0));
        ref_decode.push_back(j.value("decode_tokens_per_s", 0.0));
        std::printf("; PyTorch prefill %.0f, decode %.1f tokens/s", ref_prefill.back(), ref_decode.back());
      }
      std::printf("\n");
      std::fflush(stdout);
    }
    std::printf("median: prefill %.0f tokens/s, decode %.0f tokens/s (%.1fx recompute's %.1f); KV cache %.1f KiB "
                "per sequence at %d tokens\n",
                median(prefill_rates), median(decode_rates), median(decode_rates) / median(recompute_rates),
                median(recompute_rates), double(cache_bytes) / 1024.0, prompt + tokens);
    if (reference)
      std::printf("PyTorch reference with its KV cache (%s): prefill %.0f tokens/s, decode %.1f tokens/s; engine "
                  "%.2fx its prefill, %.2fx its decode\n",
                  p == Precision::bf16 ? "bf16 autocast" : "fp32", median(ref_prefill), median(ref_decode),
                  median(prefill_rates) / median(ref_prefill), median(decode_rates) / median(ref_decode));
    const double limit = bandwidth * 1e9 / weight_bytes * batch;
    std::printf("memory bound: read bandwidth %.1f GB/s on %d threads (%.1f on 1), active weights %.1f MB per token "
                "step (%s), limit %.0f tokens/s (%.0f on 1 thread's bandwidth); decode reached %.0f %% of it (%.0f %%)\n",
                bandwidth, threads, bandwidth_one, weight_bytes / 1e6, precision.c_str(), limit,
                bandwidth_one * 1e9 / weight_bytes * batch, 100.0 * median(decode_rates) / limit,
                100.0 * median(decode_rates) / (bandwidth_one * 1e9 / weight_bytes * batch));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "memoe_decode_bench: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
