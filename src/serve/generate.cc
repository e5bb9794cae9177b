#include "serve/generate.h"

#include <algorithm>
#include <limits>

#include "core/error.h"

namespace memoe {

std::vector<int64_t> prompt_ids(const Tokenizer& tok, const std::string& prompt) {
  std::vector<int64_t> ids = {int64_t(tok.eos_id())};
  for (int32_t t : tok.encode(prompt)) ids.push_back(t);
  return ids;
}

GenerateResult generate(const Model& m, std::vector<int64_t> ids, const GenerateOptions& o, Sampler& sampler,
                        const std::function<void(int32_t)>& on_token) {
  MEMOE_CHECK(o.max_tokens >= 0, "max_tokens must be >= 0 (got ", o.max_tokens, ")");
  MEMOE_CHECK(!ids.empty(), "generation needs at least one prompt id");
  const int64_t V = m.config.vocab_size, max_ctx = m.config.max_position_embeddings;
  MEMOE_CHECK(max_ctx > 0, "model config: max_position_embeddings must be > 0");
  const int64_t emit = o.emit_vocab > 0 ? std::min(o.emit_vocab, V) : V;
  check_token_ids(m.config, ids.data(), int64_t(ids.size()));

  GenerateResult result;
  std::vector<float> logits(static_cast<size_t>(V));
  ModelState state;
  for (int64_t step = 0; step < o.max_tokens; ++step) {
    const int64_t len = std::min<int64_t>(int64_t(ids.size()), max_ctx);
    model_forward(m, ids.data() + (int64_t(ids.size()) - len), 1, len, state);
    std::copy_n(state.logits.data() + (len - 1) * V, V, logits.begin());
    std::fill(logits.begin() + emit, logits.end(), -std::numeric_limits<float>::infinity());
    const int32_t next = sampler.sample(logits.data(), V);
    if (next == o.stop_id) {
      result.finish = FinishReason::Stop;
      break;
    }
    ids.push_back(next);
    result.tokens.push_back(next);
    if (on_token) on_token(next);
  }
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
