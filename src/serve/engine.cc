#include "serve/engine.h"

#include <algorithm>
#include <chrono>
#include <limits>

#include "core/error.h"
#include "model/inference.h"

namespace memoe {

namespace {

using Clock = std::chrono::steady_clock;
double seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

// How much of `text`'s end could still grow into one of the stop strings:
// that much is held back from the client until it cannot.
size_t held_for_stop(const std::string& text, const std::vector<std::string>& stop) {
  size_t hold = 0;
  for (const std::string& s : stop)
    for (size_t n = std::min(s.size() - 1, text.size()); n > hold; --n)
      if (text.compare(text.size() - n, n, s, 0, n) == 0) {
        hold = n;
        break;
      }
  return hold;
}

}  // namespace

struct BatchEngine::Active {
  std::shared_ptr<EngineRequest> request;
  SequenceState seq;
  Sampler sampler;
  TextStream text;
  std::string pending;  // final text not yet sent (it may begin a stop string)
  int64_t generated = 0;
  int32_t next = 0;  // the token to feed at the next step
  Clock::time_point started, last_token;
  Active(std::shared_ptr<EngineRequest> r, const Model& m, const Tokenizer& tok)
      : request(std::move(r)), seq(new_sequence(m)), sampler(request->sampling), text(tok) {}
};

BatchEngine::BatchEngine(const Model& model, const Tokenizer& tok, int max_batch, int max_queue, int64_t max_context,
                         int64_t prefill_chunk)
    : model_(model),
      tok_(tok),
      max_batch_(max_batch),
      max_queue_(max_queue),
      max_context_(max_context > 0 ? std::min(max_context, model.config.max_position_embeddings)
                                   : model.config.max_position_embeddings),
      prefill_chunk_(prefill_chunk) {
  MEMOE_CHECK(max_batch >= 1, "--max-batch must be >= 1");
  MEMOE_CHECK(max_queue >= 1, "--max-queue must be >= 1");
  thread_ = std::thread([this] { loop(); });
}

BatchEngine::~BatchEngine() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

bool BatchEngine::submit(std::shared_ptr<EngineRequest> request) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.requests;
    if (stopping_ || int(queue_.size()) >= max_queue_) {
      ++stats_.rejected;
      return false;
    }
    queue_.push_back(std::move(request));
    stats_.queue_depth = int64_t(queue_.size());
  }
  wake_.notify_one();
  return true;
}

EngineStats BatchEngine::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

bool BatchEngine::admit(std::shared_ptr<EngineRequest> r, std::unique_ptr<Active>& out) {
  out = std::make_unique<Active>(std::move(r), model_, tok_);
  Active& a = *out;
  a.started = Clock::now();
  Tensor logits;
  feed_tokens(model_, a.seq, a.request->prompt.data(), int64_t(a.request->prompt.size()), prefill_chunk_, Logits::Last,
              logits);
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.prompt_tokens += int64_t(a.request->prompt.size());
  }
  if (a.request->max_tokens == 0) {
    a.request->on_done("length", 0, "");
    return false;
  }
  const int64_t V = model_.config.vocab_size, emit = std::min<int64_t>(tok_.vocab_size(), V);
  std::fill(logits.data() + emit, logits.data() + V, -std::numeric_limits<float>::infinity());
  return take(a, a.sampler.sample(logits.data(), V));
}

bool BatchEngine::take(Active& a, int32_t token) {
  EngineRequest& r = *a.request;
  const auto now = Clock::now();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (a.generated == 0) {
      stats_.ttft_sum_s += seconds(a.started, now);
      ++stats_.ttft_count;
    } else {
      stats_.itl_sum_s += seconds(a.last_token, now);
      ++stats_.itl_count;
    }
  }
  a.last_token = now;
  auto finish = [&](const std::string& reason, bool flush = true) {
    if (flush) a.pending += a.text.finish();
    if (!a.pending.empty()) r.on_text(a.pending);
    r.on_done(reason, a.generated, "");
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.completed;
    stats_.completion_tokens += a.generated;
    return false;
  };
  if (token == tok_.eos_id() && !r.ignore_eos) return finish("stop");
  ++a.generated;
  a.pending += a.text.push(token);
  for (const std::string& s : r.stop) {
    const size_t at = a.pending.find(s);
    if (at != std::string::npos) {
      a.pending.resize(at);
      return finish("stop", /*flush=*/false);  // what follows the stop string is never sent
    }
  }
  const size_t hold = held_for_stop(a.pending, r.stop);
  if (a.pending.size() > hold) {
    if (!r.on_text(a.pending.substr(0, a.pending.size() - hold))) {
      r.on_done("cancelled", a.generated, "");
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.cancelled;
      return false;
    }
    a.pending.erase(0, a.pending.size() - hold);
  }
  if (a.generated >= r.max_tokens || a.seq.length >= max_context_) return finish("length");
  a.next = token;
  return true;
}

void BatchEngine::loop() {
  std::vector<std::unique_ptr<Active>> active;
  Tensor logits;
  for (;;) {
    std::vector<std::shared_ptr<EngineRequest>> joining;
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [&] { return stopping_ || !queue_.empty() || !active.empty(); });
      if (stopping_) break;
      while (!queue_.empty() && int(active.size() + joining.size()) < max_batch_) {
        joining.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      stats_.queue_depth = int64_t(queue_.size());
    }
    // Each new request's prefill alone, then it decodes with the others.
    for (auto& r : joining) {
      std::unique_ptr<Active> a;
      try {
        if (admit(r, a)) active.push_back(std::move(a));
      } catch (const std::exception& e) {
        r->on_done("error", 0, e.what());
      }
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      stats_.batch_size = int64_t(active.size());
    }
    if (active.empty()) continue;
    std::vector<SequenceState*> seqs;
    std::vector<int64_t> ids;
    for (auto& a : active) seqs.push_back(&a->seq), ids.push_back(a->next);
    try {
      decode_step(model_, seqs, ids.data(), logits);
    } catch (const std::exception& e) {
      for (auto& a : active) a->request->on_done("error", a->generated, e.what());
      active.clear();
      continue;
    }
    const int64_t V = model_.config.vocab_size, emit = std::min<int64_t>(tok_.vocab_size(), V);
    std::vector<std::unique_ptr<Active>> still;
    for (size_t s = 0; s < active.size(); ++s) {
      float* row = logits.data() + int64_t(s) * V;
      std::fill(row + emit, row + V, -std::numeric_limits<float>::infinity());
      if (take(*active[s], active[s]->sampler.sample(row, V))) still.push_back(std::move(active[s]));
    }
    active = std::move(still);
    std::lock_guard<std::mutex> lock(mu_);
    stats_.batch_size = int64_t(active.size());
  }
  for (auto& a : active) a->request->on_done("cancelled", a->generated, "");
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& r : queue_) r->on_done("cancelled", 0, "");
  queue_.clear();
}

}  // namespace memoe
