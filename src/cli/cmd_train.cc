// memoe train --config C --data DIR --out RUN [options] | --resume RUN:
// trains, checkpoints, and draws RUN/loss.png at the end.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "cli/commands.h"
#include "cli/precision_option.h"
#include "core/error.h"
#include "parallel/communicator.h"
#include "eval/plot.h"
#include "train/trainer.h"

namespace memoe::cli {

namespace {

struct Options {
  TrainOptions train;
  std::string out, resume, time_budget, precision;
  CLI::Option* steps = nullptr;
  CLI::Option* precision_given = nullptr;
  CLI::Option* dp_given = nullptr;
  CLI::Option* ep_given = nullptr;
  CLI::Option* pp_given = nullptr;
  double collective_timeout = TrainLimits{}.collective_timeout_s;
  double checkpoint_timeout = TrainLimits{}.checkpoint_timeout_s;
};

// "90", "90s", "4m", "1.5h": seconds.
double parse_duration(const std::string& text) {
  size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  const std::string unit = text.substr(used);
  const double scale = unit.empty() || unit == "s" ? 1 : unit == "m" ? 60 : unit == "h" ? 3600 : 0;
  MEMOE_CHECK(used > 0 && scale > 0 && std::isfinite(value) && value > 0, "--time-budget '", text,
              "' is not a duration (e.g. 90s, 4m, 1.5h)");
  return value * scale;
}

// Train and held-out loss against step, from metrics.jsonl.
void draw_loss_curve(const std::string& run_dir) {
  std::ifstream in(metrics_path(run_dir));
  Series train{"train loss", {}, {}}, val{"held-out loss", {}, {}};
  std::string line;
  while (std::getline(in, line)) {
    try {
      const auto j = nlohmann::json::parse(line);
      const double step = j.at("step").get<double>();
      train.x.push_back(step);
      train.y.push_back(j.at("loss").get<double>());
      if (j.contains("val_loss")) {
        val.x.push_back(step);
        val.y.push_back(j["val_loss"].get<double>());
      }
    } catch (const nlohmann::json::exception&) {
      continue;
    }
  }
  if (train.x.empty()) return;
  LinePlot plot{"memoe training loss", "step", "loss (nats/token)", {train}};
  if (!val.x.empty()) plot.series.push_back(val);
  write_line_plot_png(run_dir + "/loss.png", plot);
}

void run(Options& o, Communicator& world) {
  TrainLimits limits;
  if (!o.time_budget.empty()) limits.time_budget_s = parse_duration(o.time_budget);
  limits.collective_timeout_s = o.collective_timeout;
  limits.checkpoint_timeout_s = o.checkpoint_timeout;
  TrainResult r;
  std::string run_dir;
  if (!o.resume.empty()) {
    MEMOE_CHECK(o.out.empty() && o.train.config.empty(), "--resume takes the run's own options; drop --out/--config");
    MEMOE_CHECK(o.precision_given->count() == 0, "--resume keeps the run's own precision (train.json); drop --precision");
    run_dir = o.resume;
    TrainLayout layout;
    layout.ep = o.ep_given->count() > 0 ? o.train.ep : 0;
    layout.pp = o.pp_given->count() > 0 ? o.train.pp : 0;
    layout.pp_layers = o.train.pp_layers;
    const int64_t pp = layout.pp > 0 ? layout.pp : 1;
    MEMOE_CHECK(o.dp_given->count() == 0 || o.train.dp * pp == world.size(), "--dp ", o.train.dp,
                layout.pp > 0 ? " x --pp " + std::to_string(pp) : std::string(), " does not fit the world of ",
                world.size(), world.size() == 1 ? " process" : " ranks");
    r = train_resume(run_dir, o.steps->count() > 0 ? o.train.steps : 0, o.train.decay_steps, limits, &world, layout);
  } else {
    MEMOE_CHECK(!o.train.config.empty() && !o.train.data.empty() && !o.out.empty(),
                "train needs --config, --data and --out (or --resume RUN)");
    run_dir = o.out;
    o.train.precision = chosen_precision(o.precision);
    r = train_new(o.train, run_dir, limits, &world);
  }
  if (!world.is_root()) return;
  draw_loss_curve(run_dir);
  if (r.stopped_by_budget) std::printf("stopped by the time budget\n");
  std::printf("trained %lld steps: loss %.4f; held-out loss %.4f (perplexity %.2f) over %lld tokens, %s\n"
              "checkpoint %s\nloss curve %s/loss.png\n",
              (long long)r.step, r.last_loss, r.last_val.loss, r.last_val.perplexity, (long long)r.last_val.tokens,
              heldout_scope(r.last_val, "val").c_str(), r.last_checkpoint.c_str(), run_dir.c_str());
}

}  // namespace

void add_train_command(CLI::App& app) {
  auto o = std::make_shared<Options>();
  TrainOptions& t = o->train;
  CLI::App* cmd = app.add_subcommand("train", "Train a model on a prepared data directory");
  cmd->add_option("--config", t.config, "model config.json");
  cmd->add_option("--data", t.data, "data directory from memoe prepare");
  cmd->add_option("--tokenizer", t.tokenizer, "tokenizer directory (its Engram token map goes into the model)");
  cmd->add_option("--init-from", t.init_from,
                  "start from this model directory's weights (a new stage: e.g. a longer --seq under a config with "
                  "YaRN rope_scaling); tensors must keep their names and shapes");
  cmd->add_option("--out", o->out, "run directory to create");
  cmd->add_option("--resume", o->resume, "continue the run in this directory from its newest checkpoint");
  cmd->add_option("--batch", t.batch, "sequences per micro-batch, over all data-parallel ranks together")
      ->capture_default_str();
  cmd->add_option("--seq", t.seq_len, "sequence length")->capture_default_str();
  cmd->add_option("--grad-accum", t.grad_accum, "micro-batches per optimizer step")->capture_default_str();
  o->steps = cmd->add_option("--steps", t.steps, "optimizer steps in all (with --resume: extends the run)")
                 ->capture_default_str();
  cmd->add_option("--decay-steps", t.decay_steps,
                  "steps of the cosine decay (default: --steps; with --resume: moves the horizon)");
  cmd->add_option("--time-budget", o->time_budget,
                  "stop cleanly (checkpoint, evaluation, plot) within this wall time, e.g. 4m; a fresh run fits its "
                  "schedule to it");
  cmd->add_option("--lr", t.lr, "peak learning rate")->capture_default_str();
  cmd->add_option("--min-lr-ratio", t.min_lr_ratio, "final lr / peak lr (cosine)")->capture_default_str();
  cmd->add_option("--warmup", t.warmup, "linear warmup steps")->capture_default_str();
  cmd->add_option("--weight-decay", t.weight_decay, "AdamW decoupled weight decay (matrices)")->capture_default_str();
  cmd->add_option("--clip", t.clip, "global gradient-norm clip (0 = off)")->capture_default_str();
  cmd->add_option("--seed", t.seed, "seed of the init and of the data order")->capture_default_str();
  cmd->add_option("--eval-every", t.eval_every, "steps between held-out evaluations")->capture_default_str();
  cmd->add_option("--eval-windows", t.eval_windows,
                  "held-out windows per periodic evaluation (the split's first ones; 0 = every window)")
      ->capture_default_str();
  cmd->add_option("--final-eval-windows", t.final_eval_windows,
                  "held-out windows of the run's last evaluation (0 = the whole split, what memoe eval measures)")
      ->capture_default_str();
  cmd->add_option("--checkpoint-every", t.checkpoint_every, "steps between checkpoints")->capture_default_str();
  cmd->add_option("--keep-last", t.keep_last, "checkpoints to keep")->capture_default_str();
  cmd->add_option("--log-every", t.log_every, "steps between progress lines (non-terminal)")->capture_default_str();
  o->precision_given = add_precision_option(cmd, o->precision);
  o->dp_given = cmd->add_option("--dp", t.dp,
                                "data-parallel ranks: must be the number mpirun started (mpirun -n R memoe train "
                                "... --dp R); each takes batch / R sequences of every micro-batch")
                    ->capture_default_str();
  o->ep_given = cmd->add_option("--ep", t.ep,
                                "expert-parallel ranks: the routed experts of every MoE layer split over groups of E "
                                "consecutive ranks (E divides --dp); with --resume: the new layout (default: the "
                                "run's)")
                    ->capture_default_str();
  o->pp_given = cmd->add_option("--pp", t.pp,
                                "pipeline stages: the layers split into P contiguous stages run 1F1B over the "
                                "micro-batches (--grad-accum); the world is P x --dp ranks, rank = stage x dp + "
                                "data-parallel index; with --resume: the new layout (default: the run's)")
                    ->capture_default_str();
  cmd->add_option("--pp-layers", t.pp_layers,
                  "layers per pipeline stage, e.g. 2,1 (default: balanced by --pp-balance)");
  cmd->add_option("--pp-balance", t.pp_balance,
                  "what balances the pipeline stages: measured (rank 0 times each layer's forward and backward "
                  "before the run) or flops (the planner's FLOPs per layer, the same on every machine)")
      ->capture_default_str();
  cmd->add_flag("--engram-shard", t.engram_shard,
               "split each Engram table's rows (and their moments) over the ranks; a step's rows are fetched from "
               "their owners before the forward pass (kept on --resume)");
  cmd->add_option("--zero", t.zero,
                  "1: ZeRO-1, each data-parallel rank keeps the AdamW moments of its shard only (1/R of them) and "
                  "the updated weights are gathered")
      ->capture_default_str();
  cmd->add_option("--overlap", t.overlap,
                  "send each gradient bucket while the backward pass still runs (false: all after it)")
      ->capture_default_str();
  cmd->add_option("--bucket-mb", t.bucket_mb, "MiB of fp32 gradient per communication bucket")->capture_default_str();
  cmd->add_option("--collective-timeout", o->collective_timeout,
                  "seconds a rank may wait in one collective before it ends the run (a hung or stopped rank; 0: "
                  "forever)")
      ->capture_default_str();
  cmd->add_option("--checkpoint-timeout", o->checkpoint_timeout,
                  "the same while the ranks write a checkpoint (0: forever)")
      ->capture_default_str();
  cmd->callback([o] {
    // MPI only when mpirun started this process; a rank that fails ends
    // them all, so none is left waiting in a collective.
    const std::unique_ptr<Communicator> world = Communicator::from_environment();
    if (world->size() == 1) return run(*o, *world);
    try {
      run(*o, *world);
    } catch (const std::exception& e) {
      world->abort_all(e.what());
    }
  });
}

}  // namespace memoe::cli
