// memoe serve --model DIR [--host 127.0.0.1] [--port 8080] [--api-key KEY]
// [--max-batch N] [--max-context L] [--max-queue Q] [--max-tokens T]: the
// OpenAI-compatible server (serve/http_server.h) with continuous batching.
#include <filesystem>
#include <memory>
#include <string>

#include "cli/commands.h"
#include "cli/inference_options.h"
#include "cli/precision_option.h"
#include "core/error.h"
#include "io/tokenizer.h"
#include "model/checkpoint.h"
#include "serve/http_server.h"

namespace memoe::cli {

namespace {

struct Options {
  std::string model, precision;
  ServeOptions serve;
  int64_t max_body_kb = 1024;
  InferenceLoadOptions load;
};

void run(Options o) {
  MEMOE_CHECK(o.serve.port > 0 && o.serve.port < 65536, "--port must be in 1..65535");
  MEMOE_CHECK(o.serve.max_tokens >= 1, "--max-tokens must be >= 1");
  MEMOE_CHECK(o.max_body_kb >= 1, "--max-body-kb must be >= 1");
  o.serve.max_body_bytes = size_t(o.max_body_kb) * 1024;
  Model m = load_for_inference(o.model, o.load);
  apply_precision(m, o.precision, /*announce=*/true);
  const Tokenizer tok = Tokenizer::load(resolve_model_dir(o.model));
  MEMOE_CHECK(tok.vocab_size() <= m.config.vocab_size, "the tokenizer in ", o.model, " has ", tok.vocab_size(),
              " pieces, more than the model's vocabulary");
  serve_http(m, tok, o.serve);
}

}  // namespace

void add_serve_command(CLI::App& app) {
  auto o = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("serve", "Serve the model over an OpenAI-compatible HTTP API");
  ServeOptions& s = o->serve;
  cmd->add_option("--model", o->model, "model directory (with tokenizer.model)")->required();
  cmd->add_option("--host", s.host, "address to listen on (127.0.0.1: this machine only)")->capture_default_str();
  cmd->add_option("--port", s.port, "TCP port")->capture_default_str();
  cmd->add_option("--api-key", s.api_key, "require 'Authorization: Bearer KEY' (401 otherwise)");
  cmd->add_option("--name", s.model_name, "the model's id in /v1/models and requests")->capture_default_str();
  cmd->add_option("--max-batch", s.max_batch, "sequences decoded together")->capture_default_str();
  cmd->add_option("--max-queue", s.max_queue, "requests waiting for a batch slot; more are answered 429")
      ->capture_default_str();
  cmd->add_option("--max-context", s.max_context,
                  "prompt + completion tokens a request may use (0: the model's max_position_embeddings)")
      ->capture_default_str();
  cmd->add_option("--max-tokens", s.max_tokens, "the largest max_tokens a request may ask for")->capture_default_str();
  cmd->add_option("--max-body-kb", o->max_body_kb, "largest request body, KiB (413 beyond)")->capture_default_str();
  cmd->add_option("--http-threads", s.http_threads, "connections served at once (a stream holds one)")
      ->capture_default_str();
  add_precision_option(cmd, o->precision);
  add_inference_load_options(cmd, o->load);
  cmd->callback([o] { run(*o); });
}

}  // namespace memoe::cli
