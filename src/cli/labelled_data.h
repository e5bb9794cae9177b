// Labelled text (JSONL records with a label field, e.g. the Brown corpus's
// genres in data/brown-labelled.jsonl) as token ids per domain, for
// per-domain evaluation and routing analysis.
#pragma once
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "io/tokenizer.h"

namespace memoe::cli {

struct LabelledIds {
  std::vector<std::string> domains;           // sorted by name
  std::vector<std::vector<int64_t>> ids;      // per domain: its documents, each after an end-of-text id
  std::vector<int64_t> documents;             // per domain: how many
};

// A data directory's documents of one split (memoe prepare's shards, each
// document's ids up to its end-of-text id).
std::set<std::vector<int32_t>> split_documents(const std::string& data_dir, const std::string& split);

// The documents of the files by their label, tokenized in file order, each
// domain cut at max_tokens (<= 0: no cut); given `only`, just the documents
// whose ids are in it (e.g. a training run's held-out split). One line for a
// file that is not labelled JSONL, a record without the label, or no
// document left.
LabelledIds labelled_ids(const Tokenizer& tok, const std::vector<std::string>& files, const std::string& label_field,
                         int64_t max_tokens, const std::set<std::vector<int32_t>>* only = nullptr);

}  // namespace memoe::cli
