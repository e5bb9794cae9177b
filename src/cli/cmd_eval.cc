// memoe eval --model DIR --data DIR: held-out loss and perplexity, beside
// the unigram baseline of the same data; with --labelled FILE..., the loss
// per domain of labelled text too.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

#include "cli/commands.h"
#include "cli/labelled_data.h"
#include "cli/precision_option.h"
#include "eval/unigram.h"
#include "core/error.h"
#include "model/checkpoint.h"
#include "train/evaluate.h"

namespace memoe::cli {

namespace {
struct Options {
  std::string model, data, split = "val", precision, label_field = "genre", held_out_of;
  std::vector<std::string> labelled;
  int64_t seq_len = 256, batch = 8, windows = 0, tokens_per_domain = 16384;
};

// Mean next-token loss of each domain's ids, in windows of seq_len tokens.
void per_domain_loss(const Model& model, const LabelledIds& data, const Options& o) {
  ModelState state;
  for (size_t d = 0; d < data.domains.size(); ++d) {
    const std::vector<int64_t>& ids = data.ids[d];
    check_token_ids(model.config, ids.data(), int64_t(ids.size()));
    double loss_sum = 0;
    int64_t targets = 0;
    for (size_t start = 0; start + 1 < ids.size(); start += size_t(o.seq_len)) {
      const int64_t n = std::min<int64_t>(o.seq_len, int64_t(ids.size() - start));
      if (n < 2) break;
      const std::vector<int64_t> next = next_token_targets(ids.data() + start, 1, n);
      const double loss = model_loss_and_grad(model, ids.data() + start, next.data(), 1, n, state, nullptr);
      loss_sum += (loss - state.aux_loss) * double(n - 1);  // the balance loss is no part of quality
      targets += n - 1;
    }
    const double loss = targets > 0 ? loss_sum / double(targets) : 0.0;
    std::printf("domain %s: %lld tokens, loss %.4f nats/token, perplexity %.2f, %lld documents\n",
                data.domains[d].c_str(), (long long)targets, loss, std::exp(loss), (long long)data.documents[d]);
  }
}

void run(const Options& o) {
  MEMOE_CHECK(o.held_out_of.empty() || !o.labelled.empty(), "eval: --held-out-of filters --labelled FILE...");
  MEMOE_CHECK(!o.data.empty() || !o.labelled.empty(), "eval: --data DIR or --labelled FILE... is required");
  // Read (and checked) before the model loads and announces its precision.
  const std::set<std::vector<int32_t>> held_out =
      o.held_out_of.empty() ? std::set<std::vector<int32_t>>{} : split_documents(o.held_out_of, "val");
  const LabelledIds labelled =
      o.labelled.empty() ? LabelledIds{}
                         : labelled_ids(Tokenizer::load(resolve_model_dir(o.model)), o.labelled, o.label_field,
                                        o.tokens_per_domain, o.held_out_of.empty() ? nullptr : &held_out);
  Model model = load_model(o.model);
  apply_precision(model, o.precision);
  if (!o.labelled.empty()) per_domain_loss(model, labelled, o);
  if (o.data.empty()) return;
  const DataLoader data(o.data, o.split, o.seq_len, 0);
  ModelState scratch;
  const HeldoutResult r = heldout_loss(model, data, o.batch, o.windows, scratch);
  std::printf("%s split: %lld tokens, loss %.4f nats/token, perplexity %.2f (%s)\n", o.split.c_str(),
              (long long)r.tokens, r.loss, r.perplexity, heldout_scope(r, o.split).c_str());
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
  cmd->add_option("--data", o->data, "data directory from memoe prepare");
  cmd->add_option("--labelled", o->labelled,
                  "labelled JSONL files ({\"text\": ..., LABEL: ...} a line): the loss per domain")
      ->expected(1, -1);
  cmd->add_option("--labels", o->label_field, "the labelled records' label field")->capture_default_str();
  cmd->add_option("--held-out-of", o->held_out_of,
                  "a data directory from memoe prepare: only the labelled documents in its val split (the "
                  "ones a model trained on it never saw)");
  cmd->add_option("--tokens-per-domain", o->tokens_per_domain, "tokens read per domain (0: all)")
      ->capture_default_str();
  cmd->add_option("--split", o->split, "val or train")->capture_default_str();
  cmd->add_option("--seq", o->seq_len, "window length")->capture_default_str()->check(CLI::Range(2, 1 << 20));
  cmd->add_option("--batch", o->batch, "windows per forward pass")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--windows", o->windows, "evaluate at most this many windows (0 = the whole split)");
  add_precision_option(cmd, o->precision);
  cmd->callback([o] { run(*o); });
}

}  // namespace memoe::cli
