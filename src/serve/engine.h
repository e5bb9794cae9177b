// Continuous batching: one engine thread decodes every active sequence of
// the server together (model/inference.h's decode_step). A request waits in
// a bounded queue, is prefilled on its own when a batch slot frees, joins
// the batch at the next step, and leaves it the step it finishes or its
// client goes away. Each sequence keeps its own sampler, so a request's
// tokens do not depend on what else runs: greedy decoding gives what
// `memoe generate --greedy` gives for the same prompt.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "io/tokenizer.h"
#include "model/model.h"
#include "serve/generate.h"
#include "serve/sampler.h"

namespace memoe {

// One request to the engine. The callbacks run on the engine thread.
struct EngineRequest {
  std::vector<int64_t> prompt;
  int64_t max_tokens = 16;
  SamplingConfig sampling;
  std::vector<std::string> stop;  // text that ends the completion (not included)
  bool ignore_eos = false;        // the end-of-text id is a token like the others (vLLM's ignore_eos)
  // Each piece of new text as it becomes final; false: the client is gone
  // (the sequence is freed at once).
  std::function<bool(const std::string& text)> on_text;
  // Once, at the end: "stop" (end of text or a stop string), "length"
  // (max_tokens or the context), "cancelled" or "error".
  std::function<void(const std::string& finish_reason, int64_t completion_tokens, const std::string& error)> on_done;
};

struct EngineStats {
  int64_t requests = 0, completed = 0, rejected = 0, cancelled = 0;
  int64_t prompt_tokens = 0, completion_tokens = 0;
  int64_t queue_depth = 0, batch_size = 0;  // now
  double ttft_sum_s = 0, itl_sum_s = 0;     // time to first token, inter-token latency sums
  int64_t ttft_count = 0, itl_count = 0;
};

class BatchEngine {
 public:
  BatchEngine(const Model& model, const Tokenizer& tok, int max_batch, int max_queue, int64_t max_context,
              int64_t prefill_chunk = 256);
  ~BatchEngine();  // stops the thread; queued and active requests end "cancelled"
  BatchEngine(const BatchEngine&) = delete;
  BatchEngine& operator=(const BatchEngine&) = delete;

  // Queues a request; false (and nothing queued) when the queue is full.
  bool submit(std::shared_ptr<EngineRequest> request);
  EngineStats stats() const;
  int64_t max_context() const { return max_context_; }

 private:
  struct Active;
  void loop();
  bool admit(std::shared_ptr<EngineRequest> request, std::unique_ptr<Active>& out);
  // Applies one sampled token; false when the sequence is done.
  bool take(Active& a, int32_t token);

  const Model& model_;
  const Tokenizer& tok_;
  const int max_batch_, max_queue_;
  const int64_t max_context_, prefill_chunk_;
  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<EngineRequest>> queue_;
  bool stopping_ = false;
  EngineStats stats_;
  std::thread thread_;
};

}  // namespace memoe
