// memoe generate --model DIR --prompt TEXT: streams a sampled continuation
// to stdout as it is produced (the loop lives in serve/generate).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/precision_option.h"
#include "core/error.h"
#include "io/tokenizer.h"
#include "model/checkpoint.h"
#include "serve/generate.h"

namespace memoe::cli {

namespace {

struct Options {
  std::string model, prompt, precision;
  int max_tokens = 64;
  float temperature = 0.8f;
  int top_k = 40;
  float top_p = 0.95f;
  uint64_t seed = 0;
  bool greedy = false;
  int64_t max_context = 0, prefill_chunk = 256;
};

void write_out(const std::string& text) {
  if (text.empty()) return;
  std::fwrite(text.data(), 1, text.size(), stdout);
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

  Model m = load_model(o.model);
  apply_precision(m, o.precision);
  const Tokenizer tok = Tokenizer::load(resolve_model_dir(o.model));
  MEMOE_CHECK(tok.vocab_size() <= m.config.vocab_size, "the tokenizer in ", o.model, " has ", tok.vocab_size(),
              " tokens but the model's vocab_size is ", m.config.vocab_size);
  GenerateOptions g;
  g.max_tokens = o.max_tokens;
  g.stop_id = tok.eos_id();
  g.emit_vocab = tok.vocab_size();  // rows past the tokenizer's pieces are vocabulary padding
  g.max_context = o.max_context;
  g.prefill_chunk = o.prefill_chunk;
  const std::vector<int64_t> ids = prompt_ids(tok, o.prompt);
  TextStream text(tok);
  const auto t0 = std::chrono::steady_clock::now();
  const GenerateResult r =
      generate(m, ids, g, sampler, [&](int32_t token) { write_out(text.push(token)); });
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  write_out(text.finish() + "\n");
  // Decode steps: every generated token but the first (its logits came from the prefill).
  const double decoded = double(r.tokens.empty() ? 0 : r.tokens.size() - 1);
  std::fprintf(stderr,
               "generated %zu tokens (finish: %s) in %.2f s; prefill %zu tokens at %.0f tokens/s, decode %.0f "
               "tokens/s, KV cache %.1f KiB\n",
               r.tokens.size(), r.finish == FinishReason::Stop ? "stop" : "length", s, ids.size(),
               double(ids.size()) / std::max(r.prefill_s, 1e-9), decoded / std::max(r.decode_s, 1e-9),
               double(r.cache_bytes) / 1024.0);
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
  cmd->add_option("--max-context", opts->max_context,
                  "positions the KV cache holds, prompt included (0 = the model's max_position_embeddings)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--prefill-chunk", opts->prefill_chunk, "prompt tokens per prefill pass")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  add_precision_option(cmd, opts->precision);
  cmd->callback([opts] { run(*opts); });
}

}  // namespace memoe::cli
