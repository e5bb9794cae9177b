#include "serve/generate.h"

#include <algorithm>
#include <chrono>
#include <limits>

#include "core/error.h"
#include "model/inference.h"

namespace memoe {

std::vector<int64_t> prompt_ids(const Tokenizer& tok, const std::string& prompt) {
  std::vector<int64_t> ids = {int64_t(tok.eos_id())};
  for (int32_t t : tok.encode(prompt)) ids.push_back(t);
  return ids;
}

namespace {
int64_t context_of(const Model& m, const GenerateOptions& o) {
  return o.max_context > 0 ? o.max_context : m.config.max_position_embeddings;
}
}  // namespace

void check_generate_request(const Model& m, const std::vector<int64_t>& ids, const GenerateOptions& o) {
  MEMOE_CHECK(o.max_tokens >= 0, "max_tokens must be >= 0 (got ", o.max_tokens, ")");
  MEMOE_CHECK(!ids.empty(), "generation needs at least one prompt id");
  MEMOE_CHECK(o.prefill_chunk > 0, "prefill chunk must be > 0 (got ", o.prefill_chunk, ")");
  MEMOE_CHECK(o.max_context >= 0, "max context must be >= 0 (got ", o.max_context, ")");
  const int64_t context = context_of(m, o);
  MEMOE_CHECK(context > 0, "model config: max_position_embeddings must be > 0");
  MEMOE_CHECK(int64_t(ids.size()) <= context, "the prompt has ", ids.size(), " tokens, more than the context of ",
              context);
  check_token_ids(m.config, ids.data(), int64_t(ids.size()));
}

GenerateResult generate(const Model& m, std::vector<int64_t> ids, const GenerateOptions& o, Sampler& sampler,
                        const std::function<void(int32_t)>& on_token) {
  check_generate_request(m, ids, o);
  const int64_t V = m.config.vocab_size, context = context_of(m, o);
  const int64_t emit = o.emit_vocab > 0 ? std::min(o.emit_vocab, V) : V;

  using clock = std::chrono::steady_clock;
  GenerateResult result;
  SequenceState seq = new_sequence(m);
  Tensor logits;
  auto t0 = clock::now();
  feed_tokens(m, seq, ids.data(), int64_t(ids.size()), o.prefill_chunk, Logits::Last, logits);
  result.prefill_s = std::chrono::duration<double>(clock::now() - t0).count();
  t0 = clock::now();
  for (int64_t step = 0; step < o.max_tokens; ++step) {
    std::fill(logits.data() + emit, logits.data() + V, -std::numeric_limits<float>::infinity());
    const int32_t next = sampler.sample(logits.data(), V);
    if (next == o.stop_id) {
      result.finish = FinishReason::Stop;
      break;
    }
    result.tokens.push_back(next);
    if (on_token) on_token(next);
    // The next step's logits, unless this was the last token wanted or room.
    if (step + 1 == o.max_tokens || seq.length >= context) break;
    const int64_t id = next;
    feed_tokens(m, seq, &id, 1, 1, Logits::Last, logits);
  }
  result.decode_s = std::chrono::duration<double>(clock::now() - t0).count();
  result.cache_bytes = seq.cache_bytes();
  return result;
}

namespace {
size_t printable_length(const std::string& text) {
  static const std::string kReplacement = "\xEF\xBF\xBD";
  size_t n = text.size();
  while (n >= kReplacement.size() && text.compare(n - kReplacement.size(), kReplacement.size(), kReplacement) == 0)
    n -= kReplacement.size();
  return n;
}
}  // namespace

std::string TextStream::push(int32_t token) {
  // Decoding all the tokens (not just the new one) keeps multi-byte
  // characters split over byte pieces intact.
  tokens_.push_back(token);
  text_ = tok_.decode(tokens_);
  const size_t ready = printable_length(text_);
  if (ready <= released_) return "";
  std::string out = text_.substr(released_, ready - released_);
  released_ = ready;
  return out;
}

std::string TextStream::finish() {
  std::string out = released_ < text_.size() ? text_.substr(released_) : "";
  released_ = text_.size();
  return out;
}

}  // namespace memoe
