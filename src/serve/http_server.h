// An OpenAI-compatible HTTP server over the batch engine (serve/engine.h),
// on cpp-httplib: GET /v1/models, POST /v1/completions and
// /v1/chat/completions (with "stream": true as server-sent events ending in
// "data: [DONE]"), GET /health, GET /metrics (Prometheus text), and a chat
// page at GET / (serve/chat_page.h). Requests are
// checked field by field; a bad one gets 400 with an OpenAI-style error
// object, a missing or wrong key 401, a full queue 429.
#pragma once
#include <cstdint>
#include <string>

#include "io/tokenizer.h"
#include "model/model.h"

namespace memoe {

struct ServeOptions {
  std::string host = "127.0.0.1";
  int port = 8080;
  std::string api_key;            // empty: no key asked
  std::string model_name = "memoe";
  int max_batch = 16;             // sequences decoded together
  int max_queue = 64;             // requests waiting for a batch slot; more get 429
  int64_t max_context = 0;        // prompt + completion tokens; 0: the model's max_position_embeddings
  int64_t max_tokens = 1024;      // the most a request may ask for
  size_t max_body_bytes = 1 << 20;
  int http_threads = 96;          // connections served at once (each stream holds one)
};

// The chat template: messages -> the prompt the model continues.
//   "System: ...\n", "User: ...\n", "Assistant: ...\n" in order, then "Assistant:".
std::string chat_prompt(const std::vector<std::pair<std::string, std::string>>& messages);

// Serves until the process is stopped (SIGINT / SIGTERM end it cleanly).
// Prints "listening on http://HOST:PORT" on stderr once it accepts.
void serve_http(const Model& model, const Tokenizer& tok, const ServeOptions& options);

}  // namespace memoe
