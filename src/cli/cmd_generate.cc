// memoe generate --model DIR --prompt TEXT: samples a continuation token by
// token and streams it to stdout as it is produced.
#include <algorithm>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "core/error.h"
#include "io/tokenizer.h"
#include "model/checkpoint.h"
#include "serve/sampler.h"

namespace memoe::cli {

namespace {

struct Options {
  std::string model, prompt;
  int max_tokens = 64;
  float temperature = 0.8f;
  int top_k = 40;
  float top_p = 0.95f;
  uint64_t seed = 0;
  bool greedy = false;
};

// An incomplete UTF-8 sequence at the end of the text decodes to U+FFFD
// until its remaining bytes arrive; such a tail is held back, not printed.
size_t printable_length(const std::string& text) {
  static const std::string kReplacement = "\xEF\xBF\xBD";
  size_t n = text.size();
  while (n >= kReplacement.size() && text.compare(n - kReplacement.size(), kReplacement.size(), kReplacement) == 0)
    n -= kReplacement.size();
  return n;
}

void write_out(const std::string& text, size_t from, size_t to) {
  if (to <= from) return;
  std::fwrite(text.data() + from, 1, to - from, stdout);
  std::fflush(stdout);
}

void run(const Options& o) {
  MEMOE_CHECK(o.max_tokens >= 0, "--max-tokens must be >= 0 (got ", o.max_tokens, ")");
  SamplingConfig sc;
  sc.temperature = o.temperature;
  sc.top_k = o.top_k;
  sc.top_p = o.top_p;
  sc.seed = o.seed;
  sc.greedy = o.greedy;
  Sampler sampler(sc);  // checks the sampling options before the slow load

  const Model m = load_model(o.model);
  const Tokenizer tok = Tokenizer::load(o.model);
  const int64_t V = m.config.vocab_size;
  MEMOE_CHECK(tok.vocab_size() <= V, "the tokenizer in ", o.model, " has ", tok.vocab_size(),
              " tokens but the model's vocab_size is ", V);

  // Training streams put the end-of-text id before every document but the
  // first, so it leads the prompt: the model then reads the prompt as the
  // start of a document (and an empty prompt still has a token to go on).
  std::vector<int64_t> ids = {int64_t(tok.eos_id())};
  for (int32_t t : tok.encode(o.prompt)) ids.push_back(t);
  const int64_t max_ctx = m.config.max_position_embeddings;
  MEMOE_CHECK(max_ctx > 0, "model config: max_position_embeddings must be > 0");

  std::vector<int32_t> generated;
  std::vector<float> logits(static_cast<size_t>(V));
  std::string text;
  size_t printed = 0;
  ModelState state;
  for (int step = 0; step < o.max_tokens; ++step) {
    // Recompute the whole (most recent) context: there is no KV cache yet.
    const int64_t len = std::min<int64_t>(int64_t(ids.size()), max_ctx);
    model_forward(m, ids.data() + (int64_t(ids.size()) - len), 1, len, state);
    std::copy_n(state.logits.data() + (len - 1) * V, V, logits.begin());
    // Rows past the tokenizer's own pieces are vocabulary padding: never emit them.
    std::fill(logits.begin() + tok.vocab_size(), logits.end(), -std::numeric_limits<float>::infinity());
    const int32_t next = sampler.sample(logits.data(), V);
    if (next == tok.eos_id()) break;
    ids.push_back(next);
    generated.push_back(next);
    // Decoding all generated ids (not just the new one) keeps multi-byte
    // characters split over byte pieces intact; print what is new.
    text = tok.decode(generated);
    const size_t ready = printable_length(text);
    if (ready > printed) {
      write_out(text, printed, ready);
      printed = ready;
    }
  }
  write_out(text, printed, text.size());  // a trailing incomplete character, if any
  std::fputs("\n", stdout);
  std::fflush(stdout);
}

}  // namespace

void add_generate_command(CLI::App& app) {
  auto opts = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("generate", "Sample a continuation of a prompt and stream it to stdout");
  cmd->add_option("--model", opts->model, "model directory (with tokenizer.model)")->required();
  cmd->add_option("--prompt", opts->prompt, "text to continue")->required();
  cmd->add_option("--max-tokens", opts->max_tokens, "most tokens to generate")->capture_default_str();
  cmd->add_option("--temperature", opts->temperature, "softmax temperature (> 0)")->capture_default_str();
  cmd->add_option("--top-k", opts->top_k, "sample among the k most likely tokens (0 = all)")->capture_default_str();
  cmd->add_option("--top-p", opts->top_p, "nucleus: smallest set with this probability mass, in (0, 1]")
      ->capture_default_str();
  cmd->add_option("--seed", opts->seed, "sampling seed")->capture_default_str();
  cmd->add_flag("--greedy", opts->greedy, "always take the most likely token");
  cmd->callback([opts] { run(*opts); });
}

}  // namespace memoe::cli
