// The unigram baseline: a model that ignores context, p(t) estimated from the
// training split's token counts (add-one smoothed over the vocabulary).
#pragma once
#include <cstdint>
#include <string>

namespace memoe {

struct UnigramResult {
  double loss = 0;        // mean -log p(t) over the held-out tokens, nats
  double perplexity = 0;
  int64_t tokens = 0;
};

// Counts over data_dir's train split; scores its val split (at most
// max_tokens held-out tokens when > 0).
UnigramResult unigram_baseline(const std::string& data_dir, int64_t max_tokens);

}  // namespace memoe
