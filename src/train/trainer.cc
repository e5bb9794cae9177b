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
          {"eval_windows", o.eval_windows}, {"final_eval_windows", o.final_eval_windows},
          {"checkpoint_every", o.checkpoint_every},
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
  o.final_eval_windows = j.value("final_eval_windows", int64_t{0});  // runs from before the option: the whole split
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
  MEMOE_CHECK(o.final_eval_windows >= 0, "--final-eval-windows must be >= 0 (0: the whole held-out split)");
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

// What one step did, for its metrics and the progress line.
struct StepOutcome {
  double loss = 0, grad_norm = 0, lr = 0, seconds = 0;
  std::vector<std::vector<int64_t>> loads;  // each MoE layer's expert loads over the global batch
  std::vector<double> gate_sum;             // each Engram layer's gate sum over the global batch
};

// A run's training loop: what it holds between steps, and the pieces one
// iteration is made of (run() reads as their sequence).
class TrainLoop {
 public:
  TrainLoop(Run& run, const TrainLimits& limits);
  TrainResult run();

 private:
  void read_micro_batches();
  StepOutcome step();
  json step_record(const StepOutcome& s) const;
  void apply_time_budget(double step_seconds);
  HeldoutResult evaluate(int64_t max_windows);
  void print_progress(const StepOutcome& s, const json& rec, bool last_step) const;
  void checkpoint();
  double seconds_since_start() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }
  // The seconds an evaluation of `windows` held-out windows takes: the
  // periodic ones' measured time, else a guess from the step time (a
  // forward pass is about a third of a training step).
  double eval_seconds(int64_t windows) const;

  Run& run_;
  const TrainLimits& limits_;
  const TrainOptions& o;  // run_.o, whose steps the time budget may shrink
  Communicator& world_;
  Communicator& group_;  // the data-parallel ranks of this rank's stage (the world without --pp)
  Pipeline& pipeline_;
  Model& model_;
  const bool root_;
  // This rank's share of every micro-batch: windows first_window_ ..
  // first_window_ + local_batch_ - 1 of the global one.
  const int64_t local_batch_, first_window_;
  DataLoader train_, val_;
  ModelParams grads_;
  GradientSum gradient_sum_;
  AdamW opt_;
  ShardedEngramTables* tables_;
  ExpertParallel* experts_;
  const bool sharded_;  // ZeRO-1 over several ranks
  // One process without accumulation: the backward pass writes the step's
  // gradient itself. Otherwise each micro-batch's gradient goes to `micro`
  // and GradientSum adds them up over micro-batches and ranks in one fixed
  // order (parallel/data_parallel.h).
  const bool direct_;
  ModelParams micro_buffer_;
  ModelParams& micro_grads_;
  LrSchedule schedule_;
  StepClock clock_;
  const bool budgeted_;
  bool fit_to_budget_;  // only a fresh run's schedule is re-planned
  double sgemm_ = 0, flops_per_token_ = 0;
  std::vector<Batch> batches_;
  std::vector<PipeMicro> micros_;
  std::vector<int64_t> windows_;
  std::ofstream metrics_;
  const bool tty_;
  const std::string tok_file_;
  TrainResult result_;
  std::chrono::steady_clock::time_point start_;
  int64_t first_step_ = 0;
};

ModelParams make_gradients_checked(Run& run) {
  const TokenDataMeta meta = read_token_meta(run.o.data);
  MEMOE_CHECK(meta.vocab_size <= run.model.config.vocab_size, run.o.data, ": data vocabulary (", meta.vocab_size,
              ") is larger than the model's vocab_size (", run.model.config.vocab_size, ")");
  return run.model.make_gradients();
}

DataParallelOptions data_parallel_options(const Run& run) {
  DataParallelOptions d;
  d.zero = run.o.zero == 1;
  d.overlap = run.o.overlap;
  d.bucket_values = std::max<int64_t>(1, int64_t(run.o.bucket_mb * double(1 << 20) / sizeof(float)));
  d.experts_apart = run.experts != nullptr;
  d.tables_sharded = run.tables != nullptr;
  return d;
}

AdamWConfig adamw_config(const TrainOptions& o) {
  AdamWConfig a;
  a.beta1 = o.beta1;
  a.beta2 = o.beta2;
  a.weight_decay = o.weight_decay;
  return a;
}

TrainLoop::TrainLoop(Run& run, const TrainLimits& limits)
    : run_(run),
      limits_(limits),
      o(run.o),
      world_(*run.world),
      group_(run.group()),
      pipeline_(*run.pipeline),
      model_(run.model),
      root_(run.world->is_root()),
      local_batch_(run.o.batch / run.o.dp),
      first_window_(int64_t(run.group().rank()) * local_batch_),
      train_(run.o.data, "train", run.o.seq_len, run.o.seed),
      val_(run.o.data, "val", run.o.seq_len, run.o.seed),
      grads_(make_gradients_checked(run)),
      gradient_sum_(group_, model_, grads_, data_parallel_options(run)),
      opt_(model_, adamw_config(run.o), gradient_sum_.owned_slices()),
      tables_(run.tables.get()),
      experts_(run.experts.get()),
      sharded_(run.o.zero == 1 && group_.size() > 1),
      direct_(group_.size() == 1 && run.o.grad_accum == 1),
      micro_buffer_(direct_ ? ModelParams{} : model_.make_gradients()),
      micro_grads_(direct_ ? grads_ : micro_buffer_),
      schedule_{run.o.lr, run.o.warmup, run.o.decay_steps, run.o.min_lr_ratio},
      budgeted_(limits.time_budget_s > 0),
      fit_to_budget_(budgeted_ && run.state.step == 0),
      batches_(size_t(run.o.grad_accum)),
      micros_(size_t(run.o.grad_accum)),
      windows_(size_t(local_batch_ * (run.o.seq_len + 1))),
      tty_(isatty(STDERR_FILENO)),
      tok_file_(tokenizer_file(run.o)) {
  train_.set_cursor(run.state.data_cursor);
  const std::string last = latest_checkpoint(run.dir);
  if (run.state.step > 0) load_optimizer_state(last, model_, opt_);
  world_.set_collective_timeout(limits.collective_timeout_s);

  const int threads = omp_get_max_threads();
  model_.params.set_precision(o.precision);
  sgemm_ = measure_sgemm_gflops(1024, 3);
  flops_per_token_ = count_params(model_.config, o.seq_len).train_flops_per_token;
  if (root_) {
    std::fprintf(stderr, "%s\n", precision_line(o.precision).c_str());
    std::fprintf(stderr, "machine: sgemm %.0f GFLOP/s on %d threads%s; model: %.1f MFLOP per training token\n",
                 sgemm_, threads,
                 o.dp > 1 ? (" per rank, " + std::to_string(o.dp) + " data-parallel ranks").c_str() : "",
                 flops_per_token_ / 1e6);
  }
  print_memory(run, grads_, micro_buffer_, opt_, gradient_sum_);
  if (root_) {
    metrics_.open(metrics_path(run.dir), std::ios::app);
    MEMOE_CHECK(metrics_, "cannot write ", metrics_path(run.dir));
  }
  result_.step = run.state.step;
  result_.last_checkpoint = last;
}

// This rank's windows of the step's micro-batches, in order.
void TrainLoop::read_micro_batches() {
  for (int64_t micro = 0; micro < o.grad_accum; ++micro) {
    train_.next_batch_part(o.batch, first_window_, local_batch_, windows_.data());
    Batch& b = batches_[size_t(micro)];
    b.from_windows(windows_.data(), local_batch_, o.seq_len);
    micros_[size_t(micro)] = {b.ids.data(), b.targets.data(), local_batch_, o.seq_len};
  }
}

// One optimizer step: the micro-batches through the pipeline, their
// gradients summed in one order, the norm, clipping, AdamW, the router
// biases; the run's state advanced.
StepOutcome TrainLoop::step() {
  const int64_t step = run_.state.step;
  const ModelConfig& cfg = model_.config;
  const auto t0 = std::chrono::steady_clock::now();
  gradient_sum_.begin_step();
  if (experts_) experts_->begin_step(grads_);
  if (tables_) tables_->reset_counters();
  pipeline_.reset_counters();
  const size_t L = model_.params.layers.size();
  StepOutcome s;
  s.loads.resize(L);
  for (size_t l = 0; l < L; ++l)
    if (cfg.is_moe_layer(int(l))) s.loads[l].assign(size_t(cfg.n_routed_experts), 0);
  s.gate_sum.assign(L, 0.0);
  auto stop = [&](const std::string& why) {
    fail("step ", step + 1, ": ", why, "; training stopped without saving; last good checkpoint: ",
         result_.last_checkpoint.empty() ? std::string("none") : result_.last_checkpoint);
  };
  try {
    read_micro_batches();
    // Each micro-batch's sums: each Engram layer's gate sum and the loss (a
    // mean over the rank's tokens, as its stage sees it); every rank's added
    // after the step in micro-batch order, within each in rank order.
    std::vector<double> sums(size_t(o.grad_accum) * (L + 1), 0.0);
    PipeHooks hooks;
    hooks.before_forward = [&](int micro) {
      world_.set_activity("the forward pass of step " + std::to_string(step + 1));
      // Sharded tables: the rows this micro-batch reads, asked for now.
      if (tables_) tables_->prefetch(model_, batches_[size_t(micro)].ids.data(), local_batch_, o.seq_len);
    };
    hooks.after_forward = [&](int micro, const ModelState& st) {
      for (int l = pipeline_.first_layer(); l < pipeline_.last_layer(); ++l) {
        const auto& load = st.layers[size_t(l)].moe.expert_load;
        if (model_.params.layers[size_t(l)].is_moe)
          for (size_t e = 0; e < load.size(); ++e) s.loads[size_t(l)][e] += load[e];
        const Tensor& alpha = st.layers[size_t(l)].engram.alpha;
        double& g = sums[size_t(micro) * (L + 1) + size_t(l)];
        for (int64_t i = 0; i < alpha.numel(); ++i) g += alpha[i];
      }
    };
    hooks.before_backward = [&](int) {
      world_.set_activity("the backward pass of step " + std::to_string(step + 1));
      micro_grads_.zero();
    };
    if (!direct_) hooks.on_ready = [&](int part) { gradient_sum_.on_backward_progress(micro_grads_, part); };
    hooks.after_backward = [&](int) {
      world_.set_activity("the gradient exchange of step " + std::to_string(step + 1));
      if (!direct_) gradient_sum_.add(micro_grads_);
      if (experts_) experts_->add(grads_);
    };
    const std::vector<double> losses = pipeline_.train_step(micros_, micro_grads_, hooks);
    for (size_t micro = 0; micro < losses.size(); ++micro) sums[micro * (L + 1) + L] = losses[micro];
    world_.set_activity("the loss sums of step " + std::to_string(step + 1));
    const std::vector<double> all = world_.all_gather(sums);
    for (size_t micro = 0; micro < size_t(o.grad_accum); ++micro)
      for (int r = 0; r < world_.size(); ++r) {
        const double* x = all.data() + size_t(r) * sums.size() + micro * (L + 1);
        for (size_t l = 0; l < L; ++l) s.gate_sum[l] += x[l];
        s.loss += x[L];
      }
  } catch (const Error& e) {
    stop(e.what());  // e.g. the router refusing non-finite activations
  }
  sum_loads(world_, s.loads);
  // The mean over the micro-batches and ranks (each holds as many tokens).
  s.loss /= double(o.grad_accum * o.dp);
  if (experts_) experts_->finish(grads_);
  if (!direct_) gradient_sum_.finish(float(1.0 / double(o.grad_accum * o.dp)));
  GradientNormTerms terms;
  GradientNormTerms* stage_terms = o.pp > 1 ? &terms : nullptr;
  s.grad_norm = sharded_   ? gradient_sum_.sharded_global_norm(stage_terms)
                : experts_ ? experts_->global_norm(grads_, stage_terms)
                           : gradient_global_norm(grads_, stage_terms);
  if (o.pp > 1) {
    // Each stage's addends cover its own parameters (the tied embedding
    // once, on the first stage), added over the stages in one process's
    // order: every dense tensor in visit order, then the table rows.
    world_.set_activity("the gradient norm of step " + std::to_string(step + 1));
    const std::vector<double> dense = run_.pipe_group->all_gather(terms.dense);
    const std::vector<double> rows = run_.pipe_group->all_gather(terms.rows);
    double squares = 0.0;
    for (double x : dense) squares += x;
    for (double x : rows) squares += x;
    s.grad_norm = std::sqrt(squares);
  }
  if (!std::isfinite(s.loss) || !std::isfinite(s.grad_norm)) {
    std::ostringstream why;
    why << (!std::isfinite(s.loss) ? "loss" : "gradient norm") << " is not finite (loss " << s.loss
        << ", gradient norm " << s.grad_norm << ")";
    stop(why.str());
  }
  if (o.clip > 0 && s.grad_norm > o.clip) scale_gradients(grads_, float(o.clip / s.grad_norm));
  s.lr = schedule_.at(step);
  opt_.step(model_, grads_, s.lr);
  world_.set_activity("the weight gather of step " + std::to_string(step + 1));
  gradient_sum_.gather_parameters(model_.params);  // ZeRO-1: every rank's updated shard
  update_router_biases(model_, s.loads);
  world_.set_activity("the tied embedding's update of step " + std::to_string(step + 1));
  pipeline_.sync_tied_embedding(model_.params);
  model_.params.refresh_bf16_copies();
  run_.state.step = step + 1;
  run_.state.data_cursor = train_.cursor();
  run_.state.tokens_seen += o.batch * o.seq_len * o.grad_accum;
  s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return s;
}

// The step's line of metrics.jsonl (without its evaluation).
json TrainLoop::step_record(const StepOutcome& s) const {
  const double tps = double(o.batch * o.seq_len * o.grad_accum) / s.seconds;
  json rec = {{"step", run_.state.step}, {"loss", s.loss},         {"lr", s.lr},
              {"grad_norm", s.grad_norm}, {"tokens_per_s", tps}, {"gflops", tps * flops_per_token_ / 1e9},
              {"tokens", run_.state.tokens_seen}};
  if (world_.size() > 1) rec["comm_wait_s"] = gradient_sum_.wait_seconds();  // rank 0's wait on the exchange
  if (experts_) {  // rank 0's: the token all-to-alls (their waits included) and the expert-gradient chain
    rec["expert_exchange_s"] = experts_->exchange_seconds();
    rec["expert_chain_s"] = experts_->chain_seconds();
    rec["expert_sent_bytes"] = experts_->sent_bytes();
  }
  if (tables_) {  // rank 0's: waiting for fetched table rows, and the rows it sent
    rec["engram_fetch_wait_s"] = tables_->wait_seconds();
    rec["engram_sent_bytes"] = tables_->sent_bytes();
  }
  if (o.pp > 1) {
    // Each stage's idle share of the pipeline's span (the longest
    // stage's schedule: every stage starts it together, after the last
    // step's collectives): the bubble plus transfers not hidden. Busy is
    // the stage's schedule less its waits on neighbours (the passes and
    // what the hooks do: the micro-batch gradient sums). From each
    // stage's first rank.
    const std::vector<double> times = world_.all_gather(
        std::vector<double>{pipeline_.schedule_seconds() - pipeline_.wait_seconds(), pipeline_.schedule_seconds()});
    double span = 0;
    for (size_t r = 0; r < times.size(); r += 2) span = std::max(span, times[r + 1]);
    json idle = json::array();
    for (int st = 0; st < o.pp; ++st) idle.push_back(1.0 - times[size_t(st * o.dp) * 2] / span);
    rec["pipeline_idle"] = idle;
    rec["pipeline_span_s"] = span;
    rec["pipeline_sent_bytes"] = pipeline_.sent_bytes();
    rec["pipeline_ideal_bubble"] = ideal_bubble(int(o.pp), int(o.grad_accum));
  }
  rec["step_s"] = s.seconds;
  if (run_.state.step == first_step_ + 1) rec["sgemm_gflops"] = sgemm_;
  json load_ratio = json::object(), gates = json::object();
  for (size_t l = 0; l < s.loads.size(); ++l) {
    if (!s.loads[l].empty()) {
      int64_t mx = 0, sum = 0;
      for (int64_t c : s.loads[l]) mx = std::max(mx, c), sum += c;
      load_ratio[std::to_string(l)] = sum > 0 ? double(mx) * double(s.loads[l].size()) / double(sum) : 0.0;
    }
    if (model_.config.engram && model_.config.engram->has_layer(int(l)))
      gates[std::to_string(l)] = s.gate_sum[l] / double(o.batch * o.seq_len * o.grad_accum);
  }
  rec["expert_load_max_over_mean"] = load_ratio;
  rec["engram_gate_mean"] = gates;
  return rec;
}

double TrainLoop::eval_seconds(int64_t windows) const {
  const double periodic = double(heldout_windows(val_, o.eval_windows));  // what the clock's evaluations read
  const double guess = clock_.per_step() * periodic / double(3 * o.batch * o.grad_accum);
  return clock_.per_eval(guess) * double(windows) / periodic;
}

// The time budget: once a few steps are timed, a fresh run's schedule
// shrinks to the steps that fit (keeping room for the evaluations and the
// final evaluation and checkpoint); any run stops when one more step would
// not fit.
void TrainLoop::apply_time_budget(double step_seconds) {
  const double final_eval_s = budgeted_ ? eval_seconds(heldout_windows(val_, o.final_eval_windows)) : 0.0;
  const double eval_s = budgeted_ ? eval_seconds(heldout_windows(val_, o.eval_windows)) : 0.0;
  clock_.record_step(step_seconds);
  if (budgeted_ && clock_.ready()) {
    const double step_s = clock_.per_step();
    const double per_step = step_s + (o.eval_every > 0 ? eval_s / double(o.eval_every) : 0.0);
    const double room = limits_.time_budget_s - seconds_since_start() - final_eval_s - 1.0;
    if (fit_to_budget_) {
      fit_to_budget_ = false;
      const int64_t fit = run_.state.step + std::max<int64_t>(0, int64_t(room / per_step));
      if (fit < o.steps) {
        if (run_.o.decay_steps == run_.o.steps) run_.o.decay_steps = std::max<int64_t>(1, fit);
        run_.o.steps = std::max<int64_t>(run_.state.step, fit);
        schedule_.total_steps = run_.o.decay_steps;
        write_options(run_);
        std::fprintf(stderr, "%stime budget %.0f s: %lld steps fit at %.2f s/step; the schedule now ends there\n",
                     tty_ ? "\r\033[K" : "", limits_.time_budget_s, (long long)run_.o.steps, step_s);
      }
    } else if (run_.state.step < o.steps && room < per_step) {
      result_.stopped_by_budget = true;
    }
  }
  if (budgeted_ && world_.size() > 1) {
    // Rank 0's clock decides for all, so every rank stops after the same step.
    int64_t decision[3] = {result_.stopped_by_budget ? 1 : 0, run_.o.steps, run_.o.decay_steps};
    world_.broadcast(decision, 3);
    result_.stopped_by_budget = decision[0] != 0;
    run_.o.steps = decision[1];
    run_.o.decay_steps = decision[2];
    schedule_.total_steps = run_.o.decay_steps;
  }
}

// The held-out loss over the split's first max_windows windows (<= 0: all of
// them). Each data-parallel rank evaluates a contiguous share of the windows
// (with --pp, through its pipe: the last stage's losses count).
HeldoutResult TrainLoop::evaluate(int64_t max_windows) {
  world_.set_activity("the evaluation after step " + std::to_string(run_.state.step));
  const int64_t windows_in_all = heldout_windows(val_, max_windows);
  const int R = group_.size(), me = group_.rank();
  const int64_t from = windows_in_all * me / R, to = windows_in_all * (me + 1) / R;
  HeldoutSums sums = heldout_sums(val_, local_batch_, from, to - from,
                                  [&](const int64_t* ids, const int64_t* targets, int64_t b, int64_t len) {
                                    return pipeline_.forward_loss({ids, targets, b, len});
                                  });
  if (!pipeline_.is_last()) sums = HeldoutSums{};
  if (experts_ || tables_) {
    // Every rank runs as many forward passes as the one with the most
    // batches: the others join its exchanges with no rows.
    auto passes = [&](int r) {
      const int64_t n = windows_in_all * (r + 1) / R - windows_in_all * r / R;
      return (n + local_batch_ - 1) / local_batch_;
    };
    int64_t most = 0;
    for (int r = 0; r < R; ++r) most = std::max(most, passes(r));
    for (int64_t i = passes(me); i < most; ++i) idle_forward(run_);
  }
  world_.sum(&sums.loss_sum, 1);
  world_.sum(&sums.tokens, 1);
  return heldout_result(sums, val_, windows_in_all);
}

void TrainLoop::print_progress(const StepOutcome& s, const json& rec, bool last_step) const {
  const bool evaluated = rec.contains("val_loss");
  if (!root_ || !(tty_ || run_.state.step % std::max<int64_t>(1, o.log_every) == 0 || last_step || evaluated)) return;
  const double eta = seconds_since_start() / double(run_.state.step - first_step_) * double(o.steps - run_.state.step);
  char comm[48] = "";
  if (world_.size() > 1)
    std::snprintf(comm, sizeof comm, " | waiting on gradients %.0f%%", 100.0 * gradient_sum_.wait_seconds() / s.seconds);
  char val[96] = "";
  if (evaluated)
    std::snprintf(val, sizeof val, " | val %.4f over %lld tokens%s", rec["val_loss"].get<double>(),
                  (long long)rec["val_tokens"].get<int64_t>(),
                  rec["val_whole_split"].get<bool>() ? " (the whole split)" : "");
  std::fprintf(stderr, "%sstep %lld/%lld | loss %.4f | lr %.2e | %.0f tok/s, %.0f GFLOP/s%s | ETA %s%s%s",
               tty_ ? "\r\033[K" : "", (long long)run_.state.step, (long long)o.steps, s.loss, s.lr,
               rec["tokens_per_s"].get<double>(), rec["gflops"].get<double>(), comm, format_eta(eta).c_str(), val,
               tty_ && !last_step && !evaluated ? "" : "\n");
  std::fflush(stderr);
}

void TrainLoop::checkpoint() {
  world_.set_activity("the checkpoint of step " + std::to_string(run_.state.step));
  result_.last_checkpoint = save_checkpoint(run_.dir, model_, opt_, run_.state, tok_file_, o.keep_last, world_,
                                            sharded_ ? MomentsLayout::sharded : MomentsLayout::replicated,
                                            limits_.checkpoint_timeout_s, int(o.ep), tables_ != nullptr, &group_);
}

TrainResult TrainLoop::run() {
  start_ = std::chrono::steady_clock::now();
  first_step_ = run_.state.step;
  while (run_.state.step < o.steps) {
    const StepOutcome s = step();
    json rec = step_record(s);
    apply_time_budget(s.seconds);
    const bool last_step = run_.state.step >= o.steps || result_.stopped_by_budget;
    // Periodic evaluations read the split's first eval_windows windows; the
    // last one reads final_eval_windows (the whole split by default: what
    // `memoe eval` measures).
    if ((o.eval_every > 0 && run_.state.step % o.eval_every == 0) || last_step) {
      const auto e0 = std::chrono::steady_clock::now();
      const HeldoutResult h = evaluate(last_step ? o.final_eval_windows : o.eval_windows);
      if (!last_step) clock_.record_eval(std::chrono::duration<double>(std::chrono::steady_clock::now() - e0).count());
      rec["val_loss"] = h.loss;
      rec["val_ppl"] = h.perplexity;
      rec["val_tokens"] = h.tokens;
      rec["val_whole_split"] = h.whole_split;
      result_.last_val = h;
    }
    if (root_) metrics_ << rec.dump() << "\n" << std::flush;
    result_.last_loss = s.loss;
    result_.step = run_.state.step;
    print_progress(s, rec, last_step);
    if (run_.state.step % o.checkpoint_every == 0 || last_step) checkpoint();
    if (result_.stopped_by_budget) {
      if (root_)
        std::fprintf(stderr, "time budget %.0f s reached after step %lld of %lld; --resume %s continues the run\n",
                     limits_.time_budget_s, (long long)run_.state.step, (long long)o.steps, run_.dir.c_str());
      break;
    }
  }
  return result_;
}

TrainResult train_loop(Run& run, const TrainLimits& limits) { return TrainLoop(run, limits).run(); }

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
