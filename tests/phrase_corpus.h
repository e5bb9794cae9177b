// The training tests' corpus: token shards of repeated 6-token phrases of
// the tiny preset's vocabulary (structure to learn), every tenth document
// held out.
#pragma once
#include <string>
#include <vector>

#include "core/rng.h"
#include "io/token_shards.h"

namespace memoe::testing {

inline void write_phrase_corpus(const std::string& dir) {
  TokenShardWriter w(dir, 64, 3);
  Rng rng(5);
  for (int doc = 0; doc < 60; ++doc) {
    std::vector<int32_t> ids;
    for (int phrase = 0; phrase < 20; ++phrase) {
      const int32_t start = int32_t(4 + rng.below(50));
      for (int k = 0; k < 6; ++k) ids.push_back(start + k);
    }
    w.add_document(doc % 10 == 0 ? "val" : "train", ids);
  }
  w.finish();
}

inline std::string tiny_config() { return std::string(MEMOE_SOURCE_DIR) + "/configs/tiny.json"; }

}  // namespace memoe::testing
