// memoe eval --model DIR --data DIR: held-out loss and perplexity, beside
// the unigram baseline of the same data.
#include <cstdio>
#include <string>

#include "cli/commands.h"
#include "cli/precision_option.h"
#include "eval/unigram.h"
#include "model/checkpoint.h"
#include "train/evaluate.h"

namespace memoe::cli {

namespace {
struct Options {
  std::string model, data, split = "val", precision;
  int64_t seq_len = 256, batch = 8, windows = 0;
};

void run(const Options& o) {
  Model model = load_model(o.model);
  apply_precision(model, o.precision);
  const DataLoader data(o.data, o.split, o.seq_len, 0);
  ModelState scratch;
  const HeldoutResult r = heldout_loss(model, data, o.batch, o.windows, scratch);
  std::printf("%s split: %lld tokens, loss %.4f nats/token, perplexity %.2f\n", o.split.c_str(), (long long)r.tokens,
              r.loss, r.perplexity);
  if (o.split == "val") {
    const UnigramResult u = unigram_baseline(o.data, r.tokens);
    std::printf("unigram baseline: loss %.4f, perplexity %.2f\n", u.loss, u.perplexity);
  }
}
}  // namespace

void add_eval_command(CLI::App& app) {
  auto o = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("eval", "Held-out loss and perplexity of a model on a data directory");
  cmd->add_option("--model", o->model, "model directory")->required();
  cmd->add_option("--data", o->data, "data directory from memoe prepare")->required();
  cmd->add_option("--split", o->split, "val or train")->capture_default_str();
  cmd->add_option("--seq", o->seq_len, "window length")->capture_default_str()->check(CLI::Range(2, 1 << 20));
  cmd->add_option("--batch", o->batch, "windows per forward pass")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--windows", o->windows, "evaluate at most this many windows (0 = the whole split)");
  add_precision_option(cmd, o->precision);
  cmd->callback([o] { run(*o); });
}

}  // namespace memoe::cli
