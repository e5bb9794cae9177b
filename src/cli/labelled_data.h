// Labelled text (JSONL records with a label field, e.g. the Brown corpus's
// genres in data/brown-labelled.jsonl) as token ids per domain, for
// per-domain evaluation and routing analysis.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "io/tokenizer.h"

namespace memoe::cli {

struct LabelledIds {
  std::vector<std::string> domains;           // sorted by name
  std::vector<std::vector<int64_t>> ids;      // per domain: its documents, each after an end-of-text id
};

// The documents of the files by their label, tokenized in file order, each
// domain cut at max_tokens (<= 0: no cut). One line for a file that is not
// labelled JSONL or a record without the label.
LabelledIds labelled_ids(const Tokenizer& tok, const std::vector<std::string>& files, const std::string& label_field,
                         int64_t max_tokens);

}  // namespace memoe::cli
