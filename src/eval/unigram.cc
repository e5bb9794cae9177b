#include "eval/unigram.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "io/token_shards.h"

namespace memoe {

namespace {

// Calls f(id) for tokens [0, count) of the split, reading them in chunks
// through read(), which refuses an id >= vocab_size (so every id f sees
// indexes a vocab_size table) without a separate scan of the whole split.
template <typename F>
void for_each_token(const TokenSplitReader& split, int64_t count, F&& f) {
  constexpr int64_t kChunk = int64_t(1) << 20;
  std::vector<int64_t> ids(size_t(std::min(count, kChunk)));
  for (int64_t begin = 0; begin < count; begin += kChunk) {
    const int64_t n = std::min(kChunk, count - begin);
    split.read(begin, n, ids.data());
    for (int64_t i = 0; i < n; ++i) f(ids[size_t(i)]);
  }
}

}  // namespace

UnigramResult unigram_baseline(const std::string& data_dir, int64_t max_tokens) {
  TokenSplitReader train(data_dir, "train", false);
  TokenSplitReader val(data_dir, "val", false);
  const int64_t V = train.vocab_size();
  std::vector<double> counts(size_t(V), 1.0);  // add-one
  double total = double(V);
  for_each_token(train, train.size(), [&](int64_t id) { counts[size_t(id)] += 1.0; });
  total += double(train.size());
  UnigramResult r;
  r.tokens = max_tokens > 0 ? std::min(max_tokens, val.size()) : val.size();
  double nll = 0;
  for_each_token(val, r.tokens, [&](int64_t id) { nll -= std::log(counts[size_t(id)] / total); });
  r.loss = r.tokens > 0 ? nll / double(r.tokens) : 0.0;
  r.perplexity = std::exp(r.loss);
  return r;
}

}  // namespace memoe
