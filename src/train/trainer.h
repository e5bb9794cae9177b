// The training loop: data, forward/backward with gradient accumulation,
// global-norm clipping, AdamW with the sparse Engram rows, the router's
// aux-loss-free bias update, periodic held-out evaluation, JSONL metrics,
// and atomic checkpoints that resume exactly.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "parallel/communicator.h"
#include "kernels/linear.h"
#include "train/evaluate.h"

namespace memoe {

struct TrainOptions {
  std::string config;         // model config.json (fresh runs)
  std::string data;           // token data directory (memoe prepare)
  std::string tokenizer;      // optional: its token map goes into the model; copied into checkpoints
  // Optional: the initial weights come from this model directory instead of
  // the seed (a new stage of training: e.g. a longer --seq with the config's
  // rope_scaling set to YaRN). The config may differ from the checkpoint's
  // only where no tensor changes name or shape; the optimizer starts fresh.
  std::string init_from;
  int64_t batch = 8;          // sequences per micro-batch, over all data-parallel ranks together
  int64_t dp = 1;             // data-parallel ranks; each takes batch / dp sequences of every micro-batch
  int64_t pp = 1;             // pipeline stages (parallel/pipeline.h): the world is pp x dp ranks
  std::string pp_layers;      // layers per stage ("2,1"); empty: balanced by pp_balance's costs
  // What balances the stages: "measured" (rank 0 times each layer's forward
  // and backward over a micro-batch before the run starts) or "flops" (the
  // planner's FLOPs per layer: the same split on every machine).
  std::string pp_balance = "measured";
  int64_t ep = 1;             // expert-parallel ranks: routed experts split over groups of ep ranks (parallel/expert_parallel.h)
  bool engram_shard = false;  // each rank holds only its rows of the Engram tables (parallel/engram_shard.h)
  int64_t zero = 0;           // 1: ZeRO-1, the optimizer moments sharded over the data-parallel ranks
  bool overlap = true;        // gradient buckets sent while the backward pass still runs
  double bucket_mb = 8;       // MiB of fp32 gradient per bucket
  int64_t seq_len = 256;
  int64_t grad_accum = 1;     // micro-batches per optimizer step
  int64_t steps = 1000;       // optimizer steps in all
  int64_t decay_steps = 0;    // the cosine's horizon (0: steps); past it the rate stays at min_lr_ratio · lr
  double lr = 3e-3;
  double min_lr_ratio = 0.1;
  int64_t warmup = 50;
  double weight_decay = 0.1;
  double beta1 = 0.9, beta2 = 0.95;
  double clip = 1.0;          // global gradient norm; <= 0 turns clipping off
  uint64_t seed = 0;
  int64_t eval_every = 100;   // steps; 0 = only at the end
  int64_t eval_windows = 32;  // held-out windows per periodic evaluation (the first ones, the same each time)
  int64_t final_eval_windows = 0;  // of the run's last evaluation; 0 = the whole held-out split, as `memoe eval`
  int64_t checkpoint_every = 100;
  int64_t keep_last = 3;
  int64_t log_every = 10;     // progress lines when stderr is not a terminal
  // Of the large matrix products (kernels/linear.h). The CLI picks bf16 where
  // the CPU has native bf16 instructions; a resumed run keeps its own.
  Precision precision = Precision::fp32;
};

// What one invocation of the trainer may ask beyond the run's own options.
struct TrainLimits {
  // > 0: stop cleanly (checkpoint, held-out evaluation) before this many
  // seconds of training have passed. On a fresh run the schedule is also
  // fitted to it: after the first steps are timed, `steps` (and the cosine
  // horizon, when it was `steps`) shrink to what fits, and train.json says so.
  double time_budget_s = 0;
  // Data parallel: a rank that waits longer than this in one collective
  // ends the run (a hung or stopped rank); <= 0: wait forever.
  double collective_timeout_s = 20;
  // The same while the ranks write a checkpoint (shards of a large model
  // take longer than ranks drift apart in a step).
  double checkpoint_timeout_s = 120;
};

struct TrainResult {
  int64_t step = 0;                // optimizer steps done
  bool stopped_by_budget = false;  // the time budget ended the run before its last step
  std::string last_checkpoint;     // directory of the newest checkpoint
  double last_loss = 0;
  HeldoutResult last_val;          // the last evaluation (the whole held-out split by default)
};

// Starts a run in run_dir (which must not hold one already). With a world
// of R ranks (options.pp x options.dp must be R; world rank = stage x dp +
// data-parallel index), every rank calls this; rank 0 alone prints and
// writes the metrics; the checkpoints every rank (its shard).
TrainResult train_new(const TrainOptions& options, const std::string& run_dir, const TrainLimits& limits = {},
                      Communicator* world = nullptr);
// Continues the run in run_dir from its newest checkpoint, with the options
// it was started with. steps > 0 extends (or shortens) the run and
// decay_steps > 0 moves the cosine horizon; both are written back to
// train.json, so a later plain resume keeps them. Extending alone keeps the
// horizon: the added steps run at min_lr_ratio · lr.
// A run resumes in whatever world it is given (the global batch stays the
// run's, so dp may change between invocations); train.json records it.
// A new layout for a resumed run; 0 (or empty) keeps the run's own.
struct TrainLayout {
  int64_t ep = 0;         // expert-parallel ranks
  int64_t pp = 0;         // pipeline stages (a new count balances its stages unless pp_layers says)
  std::string pp_layers;  // layers per stage
};
TrainResult train_resume(const std::string& run_dir, int64_t steps, int64_t decay_steps = 0,
                         const TrainLimits& limits = {}, Communicator* world = nullptr, const TrainLayout& layout = {});

// The run's files.
std::string options_path(const std::string& run_dir);  // train.json
std::string metrics_path(const std::string& run_dir);  // metrics.jsonl
std::string latest_checkpoint(const std::string& run_dir);  // "" when none

}  // namespace memoe
