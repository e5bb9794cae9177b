// `memoe prepare`: text corpora -> a token data directory (io/token_shards.h).
//
// Inputs are streamed: .txt files hold one document per blank-line-separated
// block, .jsonl files one {"text": "..."} object per line. Each document goes
// to the "val" split with probability val_fraction, decided by a hash of
// (seed, document index), so the split is the same on every run; the rest go
// to "train". Output is built in OUT.tmp and renamed to OUT only when
// complete, so OUT never holds a partial data set.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/rng.h"
#include "io/text_corpus.h"  // for_each_document: what a document is
#include "io/token_shards.h"

namespace memoe {

struct PrepareOptions {
  std::vector<std::string> inputs;
  std::string tokenizer_dir;
  std::string out_dir;
  double val_fraction = 0.005;
  uint64_t seed = 0;
  int64_t max_shard_tokens = kDefaultShardTokens;
  // A fraction of the train split's tokens given to synthetic retrieval
  // documents (io/retrieval_text.h, the training key space only): a window
  // of the corpus's own text with needles hidden in it, then a question and
  // its answer, of up to retrieval_length tokens each. The val split stays
  // the corpus alone.
  double retrieval_mix = 0;
  int64_t retrieval_length = 512;
};

// What preparation needs from a tokenizer; tests can pass a stand-in.
struct TextEncoder {
  std::function<std::vector<int32_t>(const std::string&)> encode;  // no eot appended
  int64_t vocab_size = 0;
  int64_t eot_id = 0;
};

// Loads the tokenizer from options.tokenizer_dir, then prepares.
TokenDataMeta prepare_data(const PrepareOptions& options);
// Prepares with the given encoder (options.tokenizer_dir is not used).
TokenDataMeta prepare_data(const PrepareOptions& options, const TextEncoder& encoder);

// One synthetic retrieval document of at most max_tokens tokens: filler
// from `pool` (corpus tokens) with the needles of a random task family at
// random places, the question and the answer. Empty when the pool is empty.
std::vector<int32_t> retrieval_document(Rng& rng, const std::vector<int32_t>& pool, int64_t max_tokens,
                                        const TextEncoder& encoder);

// Whether document `index` (counted over all inputs, in order) goes to val.
bool goes_to_val(uint64_t seed, uint64_t index, double val_fraction);


}  // namespace memoe
