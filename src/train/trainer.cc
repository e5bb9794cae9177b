#include "train/trainer.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include <omp.h>

#include "core/error.h"
#include "parallel/data_parallel.h"
#include "parallel/engram_shard.h"
#include "parallel/expert_parallel.h"
#include "parallel/pipeline.h"
#include "io/atomic_file.h"
#include "io/token_map.h"
#include "io/token_shards.h"
#include "io/tokenizer.h"
#include "kernels/linear.h"
#include "model/checkpoint.h"
#include "model/init.h"
#include "model/param_count.h"
#include "train/batch.h"
#include "train/checkpoint_state.h"
#include "train/data_loader.h"
#include "train/evaluate.h"
#include "train/gradients.h"
#include "train/schedule.h"

namespace memoe {

namespace fs = std::filesystem;
using nlohmann::json;

std::string options_path(const std::string& run_dir) { return run_dir + "/train.json"; }
std::string metrics_path(const std::string& run_dir) { return run_dir + "/metrics.jsonl"; }

std::string latest_checkpoint(const std::string& run_dir) {
  const fs::path pointer = fs::path(run_dir) / "checkpoints" / "latest";
  std::error_code ec;
  fs::path name = fs::read_symlink(pointer, ec);
  if (ec) name = fs::path(resolve_model_dir(pointer.string())).filename();  // an older run's pointer file
  if (name.empty() || name.has_parent_path() || name == "latest") return "";
  const fs::path dir = fs::path(run_dir) / "checkpoints" / name;
  return fs::is_directory(dir, ec) ? dir.string() : "";
}

namespace {

json options_to_json(const TrainOptions& o) {
  return {{"config", o.config},     {"data", o.data},
          {"tokenizer", o.tokenizer}, {"init_from", o.init_from}, {"batch", o.batch},
          {"seq_len", o.seq_len},   {"grad_accum", o.grad_accum},
          {"steps", o.steps},       {"decay_steps", o.decay_steps},
          {"lr", o.lr},
          {"min_lr_ratio", o.min_lr_ratio}, {"warmup", o.warmup},
          {"weight_decay", o.weight_decay}, {"beta1", o.beta1},
          {"beta2", o.beta2},       {"clip", o.clip},
          {"seed", o.seed},         {"eval_every", o.eval_every},
          {"eval_windows", o.eval_windows}, {"checkpoint_every", o.checkpoint_every},
          {"keep_last", o.keep_last}, {"log_every", o.log_every},
          {"precision", precision_name(o.precision)}, {"dp", o.dp}, {"pp", o.pp}, {"pp_layers", o.pp_layers}, {"pp_balance", o.pp_balance}, {"ep", o.ep}, {"engram_shard", o.engram_shard},
          {"zero", o.zero},         {"overlap", o.overlap},
          {"bucket_mb", o.bucket_mb}};
}

TrainOptions options_from_json(const json& j) {
  TrainOptions o;
  o.config = j.at("config");
  o.data = j.at("data");
  o.tokenizer = j.value("tokenizer", "");
  o.init_from = j.value("init_from", "");
  o.batch = j.at("batch");
  o.seq_len = j.at("seq_len");
  o.grad_accum = j.at("grad_accum");
  o.steps = j.at("steps");
  o.decay_steps = j.value("decay_steps", o.steps);  // runs from before the option decayed over `steps`
  o.lr = j.at("lr");
  o.min_lr_ratio = j.at("min_lr_ratio");
  o.warmup = j.at("warmup");
  o.weight_decay = j.at("weight_decay");
  o.beta1 = j.at("beta1");
  o.beta2 = j.at("beta2");
  o.clip = j.at("clip");
  o.seed = j.at("seed");
  o.eval_every = j.at("eval_every");
  o.eval_windows = j.at("eval_windows");
  o.checkpoint_every = j.at("checkpoint_every");
  o.keep_last = j.at("keep_last");
  o.log_every = j.at("log_every");
  o.precision = parse_precision(j.value("precision", "fp32"));  // runs from before bf16 were fp32
  o.dp = j.value("dp", int64_t{1});
  o.ep = j.value("ep", int64_t{1});
  o.pp = j.value("pp", int64_t{1});
  o.pp_layers = j.value("pp_layers", "");
  o.pp_balance = j.value("pp_balance", "measured");
  o.engram_shard = j.value("engram_shard", false);
  o.zero = j.value("zero", int64_t{0});
  o.overlap = j.value("overlap", true);
  o.bucket_mb = j.value("bucket_mb", 8.0);
  return o;
}

void check_options(const TrainOptions& o) {
  MEMOE_CHECK(o.batch >= 1, "--batch must be >= 1");
  MEMOE_CHECK(o.dp >= 1, "--dp must be >= 1");
  MEMOE_CHECK(o.pp >= 1, "--pp must be >= 1");
  MEMOE_CHECK(o.pp > 1 || o.pp_layers.empty(), "--pp-layers needs --pp > 1");
  MEMOE_CHECK(o.pp_balance == "measured" || o.pp_balance == "flops", "--pp-balance must be measured or flops, not '",
              o.pp_balance, "'");
  MEMOE_CHECK(o.batch % o.dp == 0, "--batch ", o.batch, " is not a multiple of --dp ", o.dp,
              " (each data-parallel rank takes batch / dp sequences of every micro-batch)");
  MEMOE_CHECK(o.zero == 0 || o.zero == 1, "--zero must be 0 or 1 (ZeRO-1 shards the optimizer moments)");
  MEMOE_CHECK(o.ep >= 1, "--ep must be >= 1");
  MEMOE_CHECK(o.dp % o.ep == 0, "--ep ", o.ep, " does not divide --dp ", o.dp,
              " (each expert-parallel group is --ep consecutive data-parallel ranks)");
  MEMOE_CHECK(o.ep == 1 || o.zero == 0, "--zero 1 with --ep ", o.ep,
              " is not supported yet (expert-parallel ranks keep their experts' moments whole)");
  MEMOE_CHECK(o.bucket_mb > 0 && std::isfinite(o.bucket_mb), "--bucket-mb must be positive");
  MEMOE_CHECK(o.seq_len >= 2, "--seq must be >= 2");
  MEMOE_CHECK(o.grad_accum >= 1, "--grad-accum must be >= 1");
  MEMOE_CHECK(o.steps >= 1, "--steps must be >= 1");
  MEMOE_CHECK(o.decay_steps >= 1, "--decay-steps must be >= 1");
  MEMOE_CHECK(o.lr > 0 && std::isfinite(o.lr), "--lr must be positive");
  MEMOE_CHECK(o.warmup >= 0, "--warmup must be >= 0");
  MEMOE_CHECK(o.checkpoint_every >= 1, "--checkpoint-every must be >= 1");
  MEMOE_CHECK(o.keep_last >= 1, "--keep-last must be >= 1");
  MEMOE_CHECK(o.beta1 >= 0 && o.beta1 < 1 && o.beta2 >= 0 && o.beta2 < 1, "AdamW betas must be in [0, 1)");
}

std::string tokenizer_file(const TrainOptions& o) {
  if (o.tokenizer.empty()) return "";
  return (fs::path(o.tokenizer) / Tokenizer::kModelFile).string();
}

// Drops metric records past `step` (from a run that died after its last
// checkpoint), so a resumed run's log reads as one uninterrupted run.
void truncate_metrics(const std::string& path, int64_t step) {
  std::ifstream in(path);
  if (!in) return;
  std::string line, kept;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    try {
      if (json::parse(line).value("step", int64_t{0}) <= step) kept += line + "\n";
    } catch (const json::exception&) {
      break;  // a torn last line from a killed process
    }
  }
  write_file_atomic(path, kept);
}

std::string format_eta(double seconds) {
  char buf[32];
  const long s = long(std::max(0.0, seconds));
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%ldh%02ldm", s / 3600, (s / 60) % 60);
  else
    std::snprintf(buf, sizeof buf, "%ldm%02lds", s / 60, s % 60);
  return buf;
}

struct Run {
  TrainOptions o;
  std::string dir;
  Communicator* world = nullptr;
  Model model;
  TrainState state;
  std::shared_ptr<ExpertParallel> experts;  // with --ep > 1: the routed experts' dispatch and gradient sums
  std::shared_ptr<ShardedEngramTables> tables;  // with --engram-shard on several ranks: the tables' row fetches
  // With --pp > 1 the world splits into stage groups (the dp ranks holding
  // one stage: data parallel, expert parallel and sharded tables run
  // inside them) and pipes (the pp ranks of one replica, stage by stage).
  std::unique_ptr<Communicator> stage_group, pipe_group;
  std::unique_ptr<Pipeline> pipeline;
  // The ranks holding the same tensors as this one.
  Communicator& group() const { return stage_group ? *stage_group : *world; }
};

// With --ep > 1: this rank keeps its shard of the experts and routes
// through the EP group. Then every replica becomes rank 0's (the experts
// their shard's first holder's).
void distribute_model(Run& run) {
  Communicator& world = *run.world;
  const int L = run.model.config.num_hidden_layers;
  StageCuts cuts = {0, L};
  if (run.o.pp > 1) {
    const int stage = int(world.rank() / run.o.dp), index = int(world.rank() % run.o.dp);
    run.stage_group = world.split(stage, index);
    run.pipe_group = world.split(index, stage);
    if (!run.o.pp_layers.empty() || run.o.pp_balance == "flops") {
      cuts = stage_cuts(run.model.config, run.o.seq_len, int(run.o.pp), run.o.pp_layers);
    } else {
      // Rank 0's timings decide for every rank (they differ between ranks).
      std::vector<int64_t> decided(size_t(run.o.pp) + 1, 0);
      if (world.is_root()) {
        run.model.params.set_precision(run.o.precision);  // timed as it will train
        const LayerSeconds t = measure_layer_seconds(run.model, run.o.batch / run.o.dp, run.o.seq_len);
        const StageCuts c = balance_stages(t.layers, t.head, int(run.o.pp));
        decided.assign(c.begin(), c.end());
      }
      world.broadcast(decided.data(), int64_t(decided.size()));
      cuts.assign(decided.begin(), decided.end());
    }
    run.model.params.hold_layers(cuts[size_t(stage)], cuts[size_t(stage) + 1], stage == 0, stage == run.o.pp - 1);
  } else {
    run.pipe_group = Communicator::single();
  }
  Communicator& group = run.group();
  if (run.o.ep > 1) {
    MEMOE_CHECK(run.model.config.n_routed_experts > 0 && run.model.config.first_k_dense_replace <
                                                            run.model.config.num_hidden_layers,
                "--ep ", run.o.ep, ": the model has no MoE layer to split");
    run.experts = std::make_shared<ExpertParallel>(group, int(run.o.ep), run.model.config);
    run.model.params.hold_experts(run.experts->expert_begin(), run.experts->expert_end());
    run.model.expert_dispatch = run.experts;
  }
  broadcast_parameters(group, run.model.params, run.experts != nullptr);
  if (run.experts) run.experts->broadcast_experts(run.model.params);
  if (run.o.engram_shard && group.size() > 1) {
    run.tables = std::make_shared<ShardedEngramTables>(group, run.model);
    run.tables->keep_owned_rows(run.model.params);
    run.model.engram_row_source = run.tables;
  }
  run.pipeline = std::make_unique<Pipeline>(*run.pipe_group, run.model, cuts);
  if (world.is_root() && run.o.pp > 1)
    std::fprintf(stderr, "pipeline: %lld stages of layers %s (%s), %lld data-parallel ranks a stage\n",
                 (long long)run.o.pp, stage_cuts_string(cuts).c_str(),
                 !run.o.pp_layers.empty()       ? "--pp-layers"
                 : run.o.pp_balance == "flops" ? "balanced by FLOPs"
                                               : "balanced by measured times",
                 (long long)run.o.dp);
}

// One forward pass's collectives with no rows of this rank's own, in the
// order a forward pass makes them (Engram's fetch, then the MoE exchange,
// layer by layer): evaluation batches differ by one between ranks.
void idle_forward(const Run& run) {
  const ModelParams& p = run.model.params;
  for (size_t l = 0; l < p.layers.size(); ++l) {
    if (run.tables && p.layers[l].has_engram) run.tables->idle_fetch(int(l), p.layers[l].engram);
    if (run.experts && p.layers[l].is_moe) run.experts->idle_layer(run.model, int(l));
  }
}

// The bytes of the Engram tables this rank holds: its rows when sharded.
int64_t held_table_bytes(const Run& run, bool all_rows) {
  int64_t bytes = 0;
  for (const LayerParams& l : run.model.params.layers) {
    if (!l.has_engram) continue;
    const int64_t rows = l.engram.embedding.dim(0), D = l.engram.embedding.dim(1);
    const int r = run.group().rank();
    const int64_t held = run.tables && !all_rows ? run.tables->first_row(rows, r + 1) - run.tables->first_row(rows, r)
                                                 : rows;
    bytes += held * D * int64_t(sizeof(float));
  }
  return bytes;
}

void write_options(const Run& run) {
  if (run.world->is_root()) write_file_atomic(options_path(run.dir), options_to_json(run.o).dump(2) + "\n");
}

// The layout must be the world's: refused before anything is written.
void check_layout(const TrainOptions& o, const Communicator& world) {
  MEMOE_CHECK(o.dp * o.pp == world.size(), o.pp > 1 ? "--pp " + std::to_string(o.pp) + " x " : std::string(), "--dp ",
              o.dp, " does not fit the world of ", world.size(),
              world.size() == 1 ? " process (start R ranks with mpirun -n R)" : " ranks mpirun started");
}

int64_t routed_expert_bytes(ModelParams& p) {
  int64_t bytes = 0;
  p.visit([&](const std::string& name, Tensor& t) {
    if (routed_expert_of(name) >= 0) bytes += t.numel() * int64_t(sizeof(float)) + (t.has_bf16_copy() ? t.numel() * 2 : 0);
  });
  return bytes;
}

// Each MoE layer's expert loads over the global batch (spec §4: the bias
// update balances the global load), in one exchange.
void sum_loads(Communicator& world, std::vector<std::vector<int64_t>>& loads) {
  if (world.size() == 1) return;
  std::vector<int64_t> flat;
  for (const auto& l : loads) flat.insert(flat.end(), l.begin(), l.end());
  world.sum(flat.data(), int64_t(flat.size()));
  size_t at = 0;
  for (auto& l : loads)
    for (int64_t& c : l) c = flat[at++];
}

// Seconds per optimizer step, measured from the second step on (the first
// pays for allocations), with periodic evaluations spread over their steps.
class StepClock {
 public:
  void record_step(double seconds) {
    if (++steps_ > 1) measured_ += seconds, counted_ += 1;
  }
  void record_eval(double seconds) { eval_ += seconds, evals_ += 1; }
  bool ready() const { return counted_ >= 3; }
  double per_step() const { return counted_ > 0 ? measured_ / double(counted_) : 0.0; }
  double per_eval(double fallback) const { return evals_ > 0 ? eval_ / double(evals_) : fallback; }

 private:
  int64_t steps_ = 0, counted_ = 0, evals_ = 0;
  double measured_ = 0, eval_ = 0;
};

int64_t tensor_bytes(ModelParams& p) {
  int64_t bytes = 0;
  p.visit([&](const std::string&, Tensor& t) {
    if (t.has_f32()) bytes += t.numel() * int64_t(sizeof(float));
    if (t.has_bf16_copy()) bytes += t.numel() * int64_t(sizeof(uint16_t));
  });
  return bytes;
}

std::string mib(int64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f MiB", double(bytes) / double(1 << 20));
  return buf;
}

// What each rank holds, as one line per rank from rank 0 (the optimizer's
// share is what ZeRO-1 divides).
void print_memory(const Run& run, ModelParams& grads, ModelParams& micro, const AdamW& opt, const GradientSum& sum) {
  Communicator& world = *run.world;
  const Model& model = run.model;
  const TrainOptions& o = run.o;
  const ExpertParallel* experts = run.experts.get();
  int64_t table_moments = 0, expert_moments = 0;  // AdamW's two moments of those slices
  for (const AdamW::Moments& mo : opt.moments()) {
    const int64_t bytes = 2 * mo.slice.size() * int64_t(sizeof(float));
    if (mo.slice.name.find(".engram.embedding.") != std::string::npos) table_moments += bytes;
    if (routed_expert_of(mo.slice.name) >= 0) expert_moments += bytes;
  }
  const std::vector<int64_t> mine = {tensor_bytes(const_cast<ModelParams&>(model.params)) -
                                         held_table_bytes(run, true) + held_table_bytes(run, false),
                                     tensor_bytes(grads) + tensor_bytes(micro), opt.state_bytes(),
                                     sum.buffer_bytes(),
                                     routed_expert_bytes(const_cast<ModelParams&>(model.params)),
                                     routed_expert_bytes(grads), expert_moments,
                                     experts ? experts->buffer_bytes() : 0, held_table_bytes(run, false),
                                     table_moments};
  const std::vector<int64_t> all = world.all_gather(mine);
  if (!world.is_root()) return;
  for (int r = 0; r < world.size(); ++r) {
    const int64_t* m = all.data() + size_t(r) * mine.size();
    std::fprintf(stderr,
                 "memory of rank %d: weights %s, gradients %s, optimizer state %s (%lld bytes%s), exchange buffers "
                 "%s in %d buckets\n",
                 r, mib(m[0]).c_str(), mib(m[1]).c_str(), mib(m[2]).c_str(), (long long)m[2],
                 o.zero ? ", ZeRO-1" : "", mib(m[3]).c_str(), sum.buckets());
    // What expert parallelism divides by --ep: the routed experts' share.
    if (world.size() > 1)
      std::fprintf(stderr,
                 "routed experts of rank %d: weights %lld bytes, step gradients %lld bytes, optimizer state %lld "
                 "bytes, per-source gradient buffers %lld bytes (%lld expert-parallel ranks)\n",
                 r, (long long)m[4], (long long)m[5], (long long)m[6], (long long)m[7], (long long)o.ep);
    if (world.size() > 1 && model.config.engram)
      std::fprintf(stderr, "Engram tables of rank %d: rows %lld bytes, optimizer state %lld bytes (%s)\n", r,
                   (long long)m[8], (long long)m[9], o.engram_shard ? "sharded over the ranks" : "every row");
  }
}

TrainResult train_loop(Run& run, const TrainLimits& limits) {
  const TrainOptions& o = run.o;
  Communicator& world = *run.world;
  // The data-parallel ranks of this rank's stage (the world without --pp).
  Communicator& group = run.group();
  Pipeline& pipeline = *run.pipeline;
  const bool root = world.is_root();
  // This rank's share of every micro-batch: windows first_window ..
  // first_window + local_batch - 1 of the global one.
  const int64_t local_batch = o.batch / o.dp, first_window = int64_t(group.rank()) * local_batch;
  Model& model = run.model;
  const ModelConfig& cfg = model.config;
  const TokenDataMeta meta = read_token_meta(o.data);
  MEMOE_CHECK(meta.vocab_size <= cfg.vocab_size, o.data, ": data vocabulary (", meta.vocab_size,
              ") is larger than the model's vocab_size (", cfg.vocab_size, ")");
  DataLoader train(o.data, "train", o.seq_len, o.seed);
  DataLoader val(o.data, "val", o.seq_len, o.seed);
  train.set_cursor(run.state.data_cursor);

  AdamWConfig acfg;
  acfg.beta1 = o.beta1;
  acfg.beta2 = o.beta2;
  acfg.weight_decay = o.weight_decay;
  ModelParams grads = model.make_gradients();
  DataParallelOptions dp_options;
  dp_options.zero = o.zero == 1;
  dp_options.overlap = o.overlap;
  dp_options.bucket_values = std::max<int64_t>(1, int64_t(o.bucket_mb * double(1 << 20) / sizeof(float)));
  dp_options.experts_apart = run.experts != nullptr;
  dp_options.tables_sharded = run.tables != nullptr;
  ShardedEngramTables* tables = run.tables.get();
  ExpertParallel* experts = run.experts.get();
  GradientSum gradient_sum(group, model, grads, dp_options);
  const bool sharded = dp_options.zero && group.size() > 1;
  AdamW opt(model, acfg, gradient_sum.owned_slices());
  const std::string last = latest_checkpoint(run.dir);
  if (run.state.step > 0) load_optimizer_state(last, model, opt);
  world.set_collective_timeout(limits.collective_timeout_s);

  const int threads = omp_get_max_threads();
  model.params.set_precision(o.precision);
  const double sgemm = measure_sgemm_gflops(1024, 3);
  const double flops_per_token = count_params(cfg, o.seq_len).train_flops_per_token;
  if (root) {
    std::fprintf(stderr, "%s\n", precision_line(o.precision).c_str());
    std::fprintf(stderr, "machine: sgemm %.0f GFLOP/s on %d threads%s; model: %.1f MFLOP per training token\n",
                 sgemm, threads,
                 o.dp > 1 ? (" per rank, " + std::to_string(o.dp) + " data-parallel ranks").c_str() : "",
                 flops_per_token / 1e6);
  }
  LrSchedule schedule{o.lr, o.warmup, o.decay_steps, o.min_lr_ratio};
  const bool budgeted = limits.time_budget_s > 0;
  bool fit_to_budget = budgeted && run.state.step == 0;  // only a fresh run's schedule is re-planned
  StepClock clock;
  // One process without accumulation: the backward pass writes the step's
  // gradient itself. Otherwise each micro-batch's gradient goes to `micro`
  // and GradientSum adds them up over micro-batches and ranks in one fixed
  // order (parallel/data_parallel.h).
  const bool direct = group.size() == 1 && o.grad_accum == 1;
  ModelParams micro_buffer = direct ? ModelParams{} : model.make_gradients();
  ModelParams& micro_grads = direct ? grads : micro_buffer;
  print_memory(run, grads, micro_buffer, opt, gradient_sum);
  std::vector<Batch> batches(size_t(o.grad_accum));
  std::vector<PipeMicro> micros(size_t(o.grad_accum));
  std::vector<int64_t> windows(size_t(local_batch * (o.seq_len + 1)));
  std::ofstream metrics;
  if (root) {
    metrics.open(metrics_path(run.dir), std::ios::app);
    MEMOE_CHECK(metrics, "cannot write ", metrics_path(run.dir));
  }
  const bool tty = isatty(STDERR_FILENO);
  const std::string tok_file = tokenizer_file(o);
  TrainResult result;
  result.step = run.state.step;
  result.last_checkpoint = last;

  const auto t_start = std::chrono::steady_clock::now();
  auto seconds_since_start = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  };
  const int64_t first_step = run.state.step;
  while (run.state.step < run.o.steps) {
    const int64_t step = run.state.step;
    const auto t0 = std::chrono::steady_clock::now();
    gradient_sum.begin_step();
    if (experts) experts->begin_step(grads);
    if (tables) tables->reset_counters();
    pipeline.reset_counters();
    const size_t L = model.params.layers.size();
    std::vector<std::vector<int64_t>> loads(L);
    for (size_t l = 0; l < L; ++l)
      if (cfg.is_moe_layer(int(l))) loads[l].assign(size_t(cfg.n_routed_experts), 0);
    std::vector<double> gate_sum(L, 0.0);
    double loss = 0, gnorm = 0;
    auto stop = [&](const std::string& why) {
      fail("step ", step + 1, ": ", why, "; training stopped without saving; last good checkpoint: ",
           result.last_checkpoint.empty() ? std::string("none") : result.last_checkpoint);
    };
    try {
      for (int64_t micro = 0; micro < o.grad_accum; ++micro) {
        train.next_batch_part(o.batch, first_window, local_batch, windows.data());
        Batch& b = batches[size_t(micro)];
        b.from_windows(windows.data(), local_batch, o.seq_len);
        micros[size_t(micro)] = {b.ids.data(), b.targets.data(), local_batch, o.seq_len};
      }
      // Each micro-batch's sums: each Engram layer's gate sum and the loss (a
      // mean over the rank's tokens, as its stage sees it); every rank's added
      // after the step in micro-batch order, within each in rank order.
      std::vector<double> sums(size_t(o.grad_accum) * (L + 1), 0.0);
      PipeHooks hooks;
      hooks.before_forward = [&](int micro) {
        world.set_activity("the forward pass of step " + std::to_string(step + 1));
        // Sharded tables: the rows this micro-batch reads, asked for now.
        if (tables) tables->prefetch(model, batches[size_t(micro)].ids.data(), local_batch, o.seq_len);
      };
      hooks.after_forward = [&](int micro, const ModelState& st) {
        for (int l = pipeline.first_layer(); l < pipeline.last_layer(); ++l) {
          const auto& load = st.layers[size_t(l)].moe.expert_load;
          if (model.params.layers[size_t(l)].is_moe)
            for (size_t e = 0; e < load.size(); ++e) loads[size_t(l)][e] += load[e];
          const Tensor& alpha = st.layers[size_t(l)].engram.alpha;
          double& g = sums[size_t(micro) * (L + 1) + size_t(l)];
          for (int64_t i = 0; i < alpha.numel(); ++i) g += alpha[i];
        }
      };
      hooks.before_backward = [&](int) {
        world.set_activity("the backward pass of step " + std::to_string(step + 1));
        micro_grads.zero();
      };
      if (!direct) hooks.on_ready = [&](int part) { gradient_sum.on_backward_progress(micro_grads, part); };
      hooks.after_backward = [&](int) {
        world.set_activity("the gradient exchange of step " + std::to_string(step + 1));
        if (!direct) gradient_sum.add(micro_grads);
        if (experts) experts->add(grads);
      };
      const std::vector<double> losses = pipeline.train_step(micros, micro_grads, hooks);
      for (size_t micro = 0; micro < losses.size(); ++micro) sums[micro * (L + 1) + L] = losses[micro];
      world.set_activity("the loss sums of step " + std::to_string(step + 1));
      const std::vector<double> all = world.all_gather(sums);
      for (size_t micro = 0; micro < size_t(o.grad_accum); ++micro)
        for (int r = 0; r < world.size(); ++r) {
          const double* x = all.data() + size_t(r) * sums.size() + micro * (L + 1);
          for (size_t l = 0; l < L; ++l) gate_sum[l] += x[l];
          loss += x[L];
        }
    } catch (const Error& e) {
      stop(e.what());  // e.g. the router refusing non-finite activations
    }
    sum_loads(world, loads);
    // The mean over the micro-batches and ranks (each holds as many tokens).
    loss /= double(o.grad_accum * o.dp);
    if (experts) experts->finish(grads);
    if (!direct) gradient_sum.finish(float(1.0 / double(o.grad_accum * o.dp)));
    GradientNormTerms terms;
    GradientNormTerms* stage_terms = o.pp > 1 ? &terms : nullptr;
    gnorm = sharded   ? gradient_sum.sharded_global_norm(stage_terms)
            : experts ? experts->global_norm(grads, stage_terms)
                      : gradient_global_norm(grads, stage_terms);
    if (o.pp > 1) {
      // Each stage's addends cover its own parameters (the tied embedding
      // once, on the first stage), added over the stages in one process's
      // order: every dense tensor in visit order, then the table rows.
      world.set_activity("the gradient norm of step " + std::to_string(step + 1));
      const std::vector<double> dense = run.pipe_group->all_gather(terms.dense);
      const std::vector<double> rows = run.pipe_group->all_gather(terms.rows);
      double squares = 0.0;
      for (double x : dense) squares += x;
      for (double x : rows) squares += x;
      gnorm = std::sqrt(squares);
    }
    if (!std::isfinite(loss) || !std::isfinite(gnorm)) {
      std::ostringstream why;
      why << (!std::isfinite(loss) ? "loss" : "gradient norm") << " is not finite (loss " << loss
          << ", gradient norm " << gnorm << ")";
      stop(why.str());
    }
    if (o.clip > 0 && gnorm > o.clip) scale_gradients(grads, float(o.clip / gnorm));
    const double lr = schedule.at(step);
    opt.step(model, grads, lr);
    world.set_activity("the weight gather of step " + std::to_string(step + 1));
    gradient_sum.gather_parameters(model.params);  // ZeRO-1: every rank's updated shard
    update_router_biases(model, loads);
    world.set_activity("the tied embedding's update of step " + std::to_string(step + 1));
    pipeline.sync_tied_embedding(model.params);
    model.params.refresh_bf16_copies();
    run.state.step = step + 1;
    run.state.data_cursor = train.cursor();
    run.state.tokens_seen += o.batch * o.seq_len * o.grad_accum;
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double tps = double(o.batch * o.seq_len * o.grad_accum) / dt;
    const double gflops = tps * flops_per_token / 1e9;

    json rec = {{"step", run.state.step}, {"loss", loss}, {"lr", lr}, {"grad_norm", gnorm},
                {"tokens_per_s", tps}, {"gflops", gflops}, {"tokens", run.state.tokens_seen}};
    if (world.size() > 1) rec["comm_wait_s"] = gradient_sum.wait_seconds();  // rank 0's wait on the exchange
    if (experts) {  // rank 0's: the token all-to-alls (their waits included) and the expert-gradient chain
      rec["expert_exchange_s"] = experts->exchange_seconds();
      rec["expert_chain_s"] = experts->chain_seconds();
      rec["expert_sent_bytes"] = experts->sent_bytes();
    }
    if (tables) {  // rank 0's: waiting for fetched table rows, and the rows it sent
      rec["engram_fetch_wait_s"] = tables->wait_seconds();
      rec["engram_sent_bytes"] = tables->sent_bytes();
    }
    if (o.pp > 1) {
      // Each stage's idle share of the pipeline's span (the longest
      // stage's schedule: every stage starts it together, after the last
      // step's collectives): the bubble plus transfers not hidden. Busy is
      // the stage's schedule less its waits on neighbours (the passes and
      // what the hooks do: the micro-batch gradient sums). From each
      // stage's first rank.
      const std::vector<double> times = world.all_gather(
          std::vector<double>{pipeline.schedule_seconds() - pipeline.wait_seconds(), pipeline.schedule_seconds()});
      double span = 0;
      for (size_t r = 0; r < times.size(); r += 2) span = std::max(span, times[r + 1]);
      json idle = json::array();
      for (int st = 0; st < o.pp; ++st) idle.push_back(1.0 - times[size_t(st * o.dp) * 2] / span);
      rec["pipeline_idle"] = idle;
      rec["pipeline_span_s"] = span;
      rec["pipeline_sent_bytes"] = pipeline.sent_bytes();
      rec["pipeline_ideal_bubble"] = ideal_bubble(int(o.pp), int(o.grad_accum));
    }
    rec["step_s"] = dt;
    if (run.state.step == first_step + 1) rec["sgemm_gflops"] = sgemm;
    json load_ratio = json::object(), gates = json::object();
    for (size_t l = 0; l < loads.size(); ++l) {
      if (!loads[l].empty()) {
        int64_t mx = 0, sum = 0;
        for (int64_t c : loads[l]) mx = std::max(mx, c), sum += c;
        load_ratio[std::to_string(l)] = sum > 0 ? double(mx) * double(loads[l].size()) / double(sum) : 0.0;
      }
      if (cfg.engram && cfg.engram->has_layer(int(l)))
        gates[std::to_string(l)] = gate_sum[l] / double(o.batch * o.seq_len * o.grad_accum);
    }
    rec["expert_load_max_over_mean"] = load_ratio;
    rec["engram_gate_mean"] = gates;

    // The time budget: once a few steps are timed, a fresh run's schedule
    // shrinks to the steps that fit (keeping room for the evaluations and
    // the final checkpoint); any run stops when one more step would not fit.
    const double eval_guess = clock.per_step() * double(o.eval_windows) / double(3 * o.batch * o.grad_accum);
    clock.record_step(dt);
    if (budgeted && clock.ready()) {
      const double step_s = clock.per_step(), eval_s = clock.per_eval(eval_guess);
      const double per_step = step_s + (o.eval_every > 0 ? eval_s / double(o.eval_every) : 0.0);
      const double room = limits.time_budget_s - seconds_since_start() - eval_s - 1.0;
      if (fit_to_budget) {
        fit_to_budget = false;
        const int64_t fit = run.state.step + std::max<int64_t>(0, int64_t(room / per_step));
        if (fit < o.steps) {
          if (run.o.decay_steps == run.o.steps) run.o.decay_steps = std::max<int64_t>(1, fit);
          run.o.steps = std::max<int64_t>(run.state.step, fit);
          schedule.total_steps = run.o.decay_steps;
          write_options(run);
          std::fprintf(stderr, "%stime budget %.0f s: %lld steps fit at %.2f s/step; the schedule now ends there\n",
                       tty ? "\r\033[K" : "", limits.time_budget_s, (long long)run.o.steps, step_s);
        }
      } else if (run.state.step < o.steps && room < per_step) {
        result.stopped_by_budget = true;
      }
    }
    if (budgeted && world.size() > 1) {
      // Rank 0's clock decides for all, so every rank stops after the same step.
      int64_t decision[3] = {result.stopped_by_budget ? 1 : 0, run.o.steps, run.o.decay_steps};
      world.broadcast(decision, 3);
      result.stopped_by_budget = decision[0] != 0;
      run.o.steps = decision[1];
      run.o.decay_steps = decision[2];
      schedule.total_steps = run.o.decay_steps;
    }
    const bool last_step = run.state.step >= o.steps || result.stopped_by_budget;
    if ((o.eval_every > 0 && run.state.step % o.eval_every == 0) || last_step) {
      const auto e0 = std::chrono::steady_clock::now();
      // Each data-parallel rank evaluates a contiguous share of the windows
      // (with --pp, through its pipe: the last stage's losses count).
      world.set_activity("the evaluation after step " + std::to_string(run.state.step));
      const int64_t windows_in_all = heldout_windows(val, o.eval_windows);
      const int R = group.size(), me = group.rank();
      const int64_t from = windows_in_all * me / R, to = windows_in_all * (me + 1) / R;
      HeldoutSums sums = heldout_sums(val, local_batch, from, to - from,
                                      [&](const int64_t* ids, const int64_t* targets, int64_t b, int64_t len) {
                                        return pipeline.forward_loss({ids, targets, b, len});
                                      });
      if (!pipeline.is_last()) sums = HeldoutSums{};
      if (experts || tables) {
        // Every rank runs as many forward passes as the one with the most
        // batches: the others join its exchanges with no rows.
        auto passes = [&](int r) {
          const int64_t n = windows_in_all * (r + 1) / R - windows_in_all * r / R;
          return (n + local_batch - 1) / local_batch;
        };
        int64_t most = 0;
        for (int r = 0; r < R; ++r) most = std::max(most, passes(r));
        for (int64_t i = passes(me); i < most; ++i) idle_forward(run);
      }
      world.sum(&sums.loss_sum, 1);
      world.sum(&sums.tokens, 1);
      const HeldoutResult h = heldout_result(sums);
      clock.record_eval(std::chrono::duration<double>(std::chrono::steady_clock::now() - e0).count());
      rec["val_loss"] = h.loss;
      rec["val_ppl"] = h.perplexity;
      result.last_val_loss = h.loss;
    }
    if (root) metrics << rec.dump() << "\n" << std::flush;
    result.last_loss = loss;
    result.step = run.state.step;

    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
    const double eta = elapsed / double(run.state.step - first_step) * double(o.steps - run.state.step);
    if (root &&
        (tty || run.state.step % std::max<int64_t>(1, o.log_every) == 0 || last_step || rec.contains("val_loss"))) {
      char comm[48] = "";
      if (world.size() > 1)
        std::snprintf(comm, sizeof comm, " | waiting on gradients %.0f%%", 100.0 * gradient_sum.wait_seconds() / dt);
      std::fprintf(stderr, "%sstep %lld/%lld | loss %.4f | lr %.2e | %.0f tok/s, %.0f GFLOP/s%s | ETA %s%s%s",
                   tty ? "\r\033[K" : "", (long long)run.state.step, (long long)o.steps, loss, lr, tps, gflops, comm,
                   format_eta(eta).c_str(),
                   rec.contains("val_loss") ? (" | val " + std::to_string(rec["val_loss"].get<double>())).c_str() : "",
                   tty && !last_step && !rec.contains("val_loss") ? "" : "\n");
      std::fflush(stderr);
    }
    if (run.state.step % o.checkpoint_every == 0 || last_step) {
      world.set_activity("the checkpoint of step " + std::to_string(run.state.step));
      result.last_checkpoint = save_checkpoint(run.dir, model, opt, run.state, tok_file, o.keep_last, world,
                                               sharded ? MomentsLayout::sharded : MomentsLayout::replicated,
                                               limits.checkpoint_timeout_s, int(o.ep), tables != nullptr,
                                               &group);
    }
    if (result.stopped_by_budget) {
      if (root)
        std::fprintf(stderr, "time budget %.0f s reached after step %lld of %lld; --resume %s continues the run\n",
                     limits.time_budget_s, (long long)run.state.step, (long long)o.steps, run.dir.c_str());
      break;
    }
  }
  return result;
}

}  // namespace

namespace {

// A checkpoint's weights under a new config: every tensor must keep its name
// and shape (and the Engram hash its multipliers and primes), so only what
// shapes do not show may change: RoPE's scaling and context, say.
Model initial_weights_from(const std::string& dir, const ModelConfig& cfg, const std::vector<int64_t>& token_map) {
  Model from;
  try {
    from = load_model(dir);
  } catch (const Error& e) {
    fail("--init-from ", dir, ": ", e.what());
  }
  MEMOE_CHECK(token_map.empty() || token_map == from.token_map, "--init-from ", dir,
              ": its Engram token map is not the one --tokenizer gives");
  // The new config's tensors, allocated but never touched (core/tensor.h).
  Model fresh;
  fresh.config = cfg;
  fresh.token_map = from.token_map;
  fresh.engram_hash = make_engram_hashes(cfg, from.token_map);
  fresh.params.allocate(cfg, fresh.engram_rows(), false);
  std::map<std::string, std::vector<int64_t>> shapes;
  fresh.params.visit([&](const std::string& name, Tensor& t) { shapes[name] = t.shape(); });
  size_t matched = 0;
  from.params.visit([&](const std::string& name, Tensor& t) {
    auto it = shapes.find(name);
    MEMOE_CHECK(it != shapes.end(), "--init-from ", dir, ": tensor ", name, " is not in the new config's model");
    MEMOE_CHECK(it->second == t.shape(), "--init-from ", dir, ": tensor ", name, " has shape ", shape_string(t.shape()),
                ", the new config's ", shape_string(it->second));
    ++matched;
  });
  MEMOE_CHECK(matched == shapes.size(), "--init-from ", dir, ": the new config has ", shapes.size(),
              " tensors, the checkpoint ", matched);
  for (size_t l = 0; l < fresh.engram_hash.size(); ++l)
    MEMOE_CHECK(fresh.engram_hash[l].multipliers == from.engram_hash[l].multipliers &&
                    fresh.engram_hash[l].primes == from.engram_hash[l].primes,
                "--init-from ", dir, ": layer ", l, "'s Engram hash differs under the new config");
  from.config = cfg;
  return from;
}

}  // namespace

TrainResult train_new(const TrainOptions& options_in, const std::string& run_dir, const TrainLimits& limits,
                      Communicator* world_in) {
  std::unique_ptr<Communicator> single;
  Communicator& world = world_in ? *world_in : *(single = Communicator::single());
  TrainOptions options = options_in;
  if (options.decay_steps == 0) options.decay_steps = options.steps;
  check_options(options);
  check_layout(options, world);
  MEMOE_CHECK(!fs::exists(options_path(run_dir)), run_dir,
              " already holds a run (train.json); use --resume to continue it or choose another --out");
  MEMOE_CHECK(fs::is_directory(options.data), "data directory ", options.data, " does not exist");
  world.barrier();  // every rank has checked run_dir before rank 0 writes into it
  Run run;
  run.o = options;
  run.dir = run_dir;
  run.world = &world;
  const ModelConfig cfg = load_config(options.config);
  std::vector<int64_t> token_map;
  if (!options.tokenizer.empty()) {
    const Tokenizer tok = Tokenizer::load(options.tokenizer);
    MEMOE_CHECK(tok.vocab_size() <= cfg.vocab_size, "tokenizer ", options.tokenizer, " has ", tok.vocab_size(),
                " pieces but the config's vocab_size is ", cfg.vocab_size);
    token_map = compressed_token_map(tok, cfg.vocab_size);
  }
  if (options.init_from.empty()) {
    run.model = init_model(cfg, options.seed, token_map);
  } else {
    run.model = initial_weights_from(options.init_from, cfg, token_map);
  }
  distribute_model(run);
  run.state.seed = options.seed;
  if (world.is_root()) {
    std::error_code ec;
    fs::create_directories(run_dir, ec);
    MEMOE_CHECK(!ec, "cannot create ", run_dir, ": ", ec.message());
    write_options(run);
    write_file_atomic(metrics_path(run_dir), "");
  }
  return train_loop(run, limits);
}

TrainResult train_resume(const std::string& run_dir, int64_t steps, int64_t decay_steps, const TrainLimits& limits,
                         Communicator* world_in, const TrainLayout& layout) {
  std::unique_ptr<Communicator> single;
  Communicator& world = world_in ? *world_in : *(single = Communicator::single());
  json j;
  try {
    std::ifstream in(options_path(run_dir));
    MEMOE_CHECK(in, "cannot resume: ", options_path(run_dir), " not found");
    j = json::parse(in);
  } catch (const json::exception& e) {
    fail("cannot resume: ", options_path(run_dir), " is malformed (", e.what(), ")");
  }
  Run run;
  try {
    run.o = options_from_json(j);
  } catch (const json::exception& e) {
    fail("cannot resume: ", options_path(run_dir), " is malformed (", e.what(), ")");
  }
  if (steps > 0) run.o.steps = steps;
  if (decay_steps > 0) run.o.decay_steps = decay_steps;
  // The global batch is the run's; the ranks splitting it are this world's.
  const TrainOptions before = run.o;
  if (layout.ep > 0) run.o.ep = layout.ep;
  if (layout.pp > 0 && layout.pp != run.o.pp) run.o.pp = layout.pp, run.o.pp_layers = "";
  if (!layout.pp_layers.empty()) run.o.pp_layers = layout.pp_layers;
  MEMOE_CHECK(world.size() % run.o.pp == 0, "cannot resume ", run_dir, ": its --pp ", run.o.pp,
              " does not divide the world of ", world.size(), " (pass --pp P for the new layout)");
  run.o.dp = world.size() / run.o.pp;
  const bool relayout = run.o.dp != before.dp || run.o.ep != before.ep || run.o.pp != before.pp ||
                        run.o.pp_layers != before.pp_layers;
  check_options(run.o);
  run.dir = run_dir;
  run.world = &world;
  const std::string last = latest_checkpoint(run_dir);
  world.barrier();  // every rank has read train.json and the checkpoint pointer
  if (last.empty()) {
    // Killed before its first checkpoint: start over from the same options.
    if (world.is_root()) fs::remove(options_path(run_dir));
    world.barrier();
    return train_new(run.o, run_dir, limits, &world);
  }
  // Temporaries of checkpoints a killed run left half-written: a resumed run
  // is the only writer of its directory.
  if (world.is_root()) {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(fs::path(run_dir) / "checkpoints", ec))
      if (e.path().filename().string().rfind(".", 0) == 0) fs::remove_all(e.path(), ec);
  }
  try {
    run.model = load_model(last);
    run.state = load_train_state(last);
  } catch (const Error& e) {
    fail("cannot resume from ", last, ": ", e.what());
  }
  distribute_model(run);
  if (world.is_root()) truncate_metrics(metrics_path(run_dir), run.state.step);
  MEMOE_CHECK(run.state.step < run.o.steps, "run ", run_dir, " already finished its ", run.o.steps,
              " steps (pass --steps N to extend it)");
  // So that the next plain resume keeps them.
  if (steps > 0 || decay_steps > 0 || relayout) write_options(run);
  return train_loop(run, limits);
}

}  // namespace memoe
