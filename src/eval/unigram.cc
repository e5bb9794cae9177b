#include "eval/unigram.h"

#include <cmath>
#include <vector>

#include "io/token_shards.h"

namespace memoe {

UnigramResult unigram_baseline(const std::string& data_dir, int64_t max_tokens) {
  TokenSplitReader train(data_dir, "train", false);
  TokenSplitReader val(data_dir, "val", false);
  const int64_t V = train.vocab_size();
  std::vector<double> counts(size_t(V), 1.0);  // add-one
  double total = double(V);
  for (int64_t i = 0; i < train.size(); ++i) {
    counts[train.at(i)] += 1.0;
    total += 1.0;
  }
  UnigramResult r;
  r.tokens = max_tokens > 0 ? std::min(max_tokens, val.size()) : val.size();
  double nll = 0;
  for (int64_t i = 0; i < r.tokens; ++i) nll -= std::log(counts[val.at(i)] / total);
  r.loss = r.tokens > 0 ? nll / double(r.tokens) : 0.0;
  r.perplexity = std::exp(r.loss);
  return r;
}

}  // namespace memoe
