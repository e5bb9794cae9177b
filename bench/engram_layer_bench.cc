// The cost of one Engram layer (spec §5) by its shape, in Google Benchmark:
// forward, and forward + backward, over 8 x 512 tokens at the width of the
// experiment's models (configs/experiments/engram-e20.json: d = 256, 128
// embedding values per n-gram order, kernel 4), against
//   N       the largest n-gram order (N - 1 orders, each its own tables),
//   heads   hash heads (tables) per order, and
//   MiB     the bytes of the layer's tables, F32 (rows per table follow).
// Random token ids, so the rows read are spread over the whole table, as
// a large vocabulary spreads them.
//
//   build/memoe_engram_bench [--benchmark_filter=...] [--benchmark_repetitions=3]
//
// docs/experiments/engram-cost.md reads it beside the training step's other
// parts (memoe_bench --compare).
#include <benchmark/benchmark.h>
#include <omp.h>

#include <string>

#include "core/process.h"
#include "core/rng.h"
#include "io/config.h"
#include "kernels/embedding.h"
#include "kernels/linear.h"
#include "model/engram.h"
#include "model/init.h"

namespace memoe {
namespace {

constexpr int64_t kBatch = 8, kSeq = 512;

struct Layer {
  Model model;
  ModelParams grads;
  std::vector<int64_t> compressed;
  std::vector<float> h, out, dout, dh;
  EngramCache cache;
};

// A two-layer model whose layer 1 is the Engram layer of the given shape.
Layer make_layer(int ngram, int heads, int64_t table_mib) {
  ModelConfig cfg = load_config(std::string(MEMOE_SOURCE_DIR) + "/configs/experiments/engram-e20.json");
  cfg.num_hidden_layers = 2;
  EngramConfig& e = *cfg.engram;
  e.layer_ids = {1};
  e.max_ngram_size = ngram;
  e.n_head_per_ngram = heads;
  const int64_t row_bytes = e.head_dim() * 4;
  const int64_t rows = table_mib * (int64_t(1) << 20) / row_bytes / e.tables_per_layer();
  e.table_sizes.assign(size_t(ngram - 1), rows);
  validate_config(cfg);
  Layer l{init_model(cfg, 1), {}, {}, {}, {}, {}, {}, {}};
  l.grads = l.model.make_gradients();
  const int64_t n = kBatch * kSeq, d = cfg.hidden_size;
  Rng rng(2);
  std::vector<int64_t> ids(static_cast<size_t>(n));
  for (int64_t& id : ids) id = int64_t(rng.below(uint64_t(cfg.vocab_size)));
  l.compressed.resize(size_t(n));
  remap_ids(ids.data(), n, l.model.token_map.empty() ? nullptr : l.model.token_map.data(), l.compressed.data());
  for (auto* v : {&l.h, &l.out, &l.dout, &l.dh}) v->resize(size_t(n * d));
  for (float& x : l.h) x = float(rng.normal());
  for (float& x : l.dout) x = float(0.01 * rng.normal());
  return l;
}

void run(benchmark::State& state, bool backward) {
  Layer l = make_layer(int(state.range(0)), int(state.range(1)), state.range(2));
  const ModelConfig& cfg = l.model.config;
  const EngramParams& p = l.model.params.layers[1].engram;
  EngramParams& g = l.grads.layers[1].engram;
  for (auto _ : state) {
    engram_forward(cfg, l.model.engram_hash[1], p, l.h.data(), l.compressed.data(), kBatch, kSeq, l.cache,
                   l.out.data());
    if (backward) {
      g.embedding_grad.rows.clear();
      g.embedding_grad.grad.clear();
      engram_backward(cfg, p, l.h.data(), l.cache, l.dout.data(), kBatch, kSeq, g, l.dh.data());
    }
    benchmark::DoNotOptimize(l.out.data());
    benchmark::ClobberMemory();
  }
  state.counters["tokens/s"] = benchmark::Counter(double(kBatch * kSeq), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["tables"] = double(cfg.engram->tables_per_layer());
  state.counters["E"] = double(cfg.engram->embed_dim());
}

void Forward(benchmark::State& state) { run(state, false); }
void ForwardBackward(benchmark::State& state) { run(state, true); }

// {N, heads, MiB}: N and heads at 64 MiB of tables, then the table size at
// N = 3 and 4 heads (the experiment's shape: 5.95 M values, 23 MiB a layer).
void shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"N", "heads", "MiB"});
  for (int n : {2, 3, 4}) b->Args({n, 4, 64});
  for (int heads : {1, 2, 8}) b->Args({3, heads, 64});
  for (int mib : {1, 16, 256, 1024}) b->Args({3, 4, mib});
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

BENCHMARK(Forward)->Apply(shapes);
BENCHMARK(ForwardBackward)->Apply(shapes);

}  // namespace
}  // namespace memoe

int main(int argc, char** argv) {
  memoe::restart_with_defaults(argv, memoe::kernel_environment_defaults());
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
