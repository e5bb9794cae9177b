// memoe generate --model DIR --prompt TEXT | --ids 1,2,3: streams a sampled
// continuation to stdout as it is produced (the loop lives in
// serve/generate), or with --json prints one JSON object at the end.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/id_list.h"
#include "cli/inference_options.h"
#include "cli/precision_option.h"
#include "core/error.h"
#include "io/tokenizer.h"
#include "model/checkpoint.h"
#include "serve/generate.h"

namespace memoe::cli {

namespace {

struct Options {
  std::string model, prompt, ids, precision;
  bool json = false;
  int max_tokens = 64;
  float temperature = 0.8f;
  int top_k = 40;
  float top_p = 0.95f;
  uint64_t seed = 0;
  bool greedy = false;
  int64_t max_context = 0, prefill_chunk = 256;
  InferenceLoadOptions load;
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

  MEMOE_CHECK(o.prompt.empty() != o.ids.empty(), o.prompt.empty() ? "generate needs --prompt TEXT or --ids 1,2,3"
                                                                   : "give --prompt or --ids, not both");
  Model m = load_for_inference(o.model, o.load);
  apply_precision(m, o.precision, /*announce=*/false);  // said below, once the request is known to be good
  const Tokenizer tok = Tokenizer::load(resolve_model_dir(o.model));
  MEMOE_CHECK(tok.vocab_size() <= m.config.vocab_size, "the tokenizer in ", o.model, " has ", tok.vocab_size(),
              " tokens but the model's vocab_size is ", m.config.vocab_size);
  GenerateOptions g;
  g.max_tokens = o.max_tokens;
  g.stop_id = tok.eos_id();
  g.emit_vocab = tok.vocab_size();  // rows past the tokenizer's pieces are vocabulary padding
  g.max_context = o.max_context;
  g.prefill_chunk = o.prefill_chunk;
  std::vector<int64_t> ids;
  if (!o.ids.empty()) {
    const auto rows = parse_id_rows(o.ids);
    MEMOE_CHECK(rows.size() == 1, "--ids takes one sequence (no ';')");
    ids = rows[0];
  } else {
    ids = prompt_ids(tok, o.prompt);
  }
  check_generate_request(m, ids, g);
  std::fprintf(stderr, "%s\n", precision_line(chosen_precision(o.precision)).c_str());
  TextStream text(tok);
  const auto t0 = std::chrono::steady_clock::now();
  const GenerateResult r =
      generate(m, ids, g, sampler, [&](int32_t token) { if (!o.json) write_out(text.push(token)); });
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // Decode steps: every generated token but the first (its logits came from the prefill).
  const double decoded = double(r.tokens.empty() ? 0 : r.tokens.size() - 1);
  const double prefill_rate = double(ids.size()) / std::max(r.prefill_s, 1e-9);
  const double decode_rate = decoded / std::max(r.decode_s, 1e-9);
  if (o.json) {
    const nlohmann::json j = {{"prompt_ids", ids},
                              {"ids", r.tokens},
                              {"text", tok.decode(r.tokens)},
                              {"finish", r.finish == FinishReason::Stop ? "stop" : "length"},
                              {"prefill_tokens_per_s", prefill_rate},
                              {"decode_tokens_per_s", decode_rate},
                              {"kv_cache_bytes", r.cache_bytes}};
    write_out(j.dump() + "\n");
    return;
  }
  write_out(text.finish() + "\n");
  std::fprintf(stderr,
               "generated %zu tokens (finish: %s) in %.2f s; prefill %zu tokens at %.0f tokens/s, decode %.0f "
               "tokens/s, KV cache %.1f KiB\n",
               r.tokens.size(), r.finish == FinishReason::Stop ? "stop" : "length", s, ids.size(),
               prefill_rate, decode_rate,
               double(r.cache_bytes) / 1024.0);
}

}  // namespace

void add_generate_command(CLI::App& app) {
  auto opts = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("generate", "Sample a continuation of a prompt and stream it to stdout");
  cmd->add_option("--model", opts->model, "model directory (with tokenizer.model)")->required();
  cmd->add_option("--prompt", opts->prompt, "text to continue (the end-of-text id leads it)");
  cmd->add_option("--ids", opts->ids, "token ids to continue instead of text: 1,2,3");
  cmd->add_flag("--json", opts->json,
                "print one JSON object at the end (prompt ids, ids, text, finish, prefill and decode tokens/s, "
                "KV cache bytes) instead of streaming text");
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
  add_inference_load_options(cmd, opts->load);
  cmd->callback([opts] { run(*opts); });
}

}  // namespace memoe::cli
