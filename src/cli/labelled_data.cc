#include "cli/labelled_data.h"

#include <map>

#include "core/error.h"
#include "io/text_corpus.h"
#include "io/token_shards.h"

namespace memoe::cli {

std::set<std::vector<int32_t>> split_documents(const std::string& data_dir, const std::string& split) {
  const TokenSplitReader reader(data_dir, split);
  std::vector<int64_t> all(size_t(reader.size()));
  reader.read(0, reader.size(), all.data());
  std::set<std::vector<int32_t>> docs;
  std::vector<int32_t> doc;
  for (int64_t id : all) {
    if (id == reader.eot_id()) {
      docs.insert(doc);
      doc.clear();
    } else {
      doc.push_back(int32_t(id));
    }
  }
  return docs;
}

LabelledIds labelled_ids(const Tokenizer& tok, const std::vector<std::string>& files, const std::string& label_field,
                         int64_t max_tokens, const std::set<std::vector<int32_t>>* only) {
  MEMOE_CHECK(!files.empty(), "no labelled data files given");
  std::map<std::string, std::pair<std::vector<int64_t>, int64_t>> by_label;  // ids, documents
  for (const std::string& f : files) {
    check_text_input(f);
    for_each_labelled_document(f, label_field, [&](const std::string& label, const std::string& text) {
      const std::vector<int32_t> doc = tok.encode(text);
      if (only && !only->count(doc)) return;
      auto& [ids, documents] = by_label[label];
      if (max_tokens > 0 && int64_t(ids.size()) >= max_tokens) return;
      // As in training data: every document follows an end-of-text id.
      ids.push_back(tok.eos_id());
      ids.insert(ids.end(), doc.begin(), doc.end());
      if (max_tokens > 0 && int64_t(ids.size()) > max_tokens) ids.resize(size_t(max_tokens));
      ++documents;
    });
  }
  MEMOE_CHECK(!only || !by_label.empty(), "none of the labelled documents is in the held-out split given");
  LabelledIds out;
  for (auto& [label, entry] : by_label) {
    out.domains.push_back(label);
    out.ids.push_back(std::move(entry.first));
    out.documents.push_back(entry.second);
  }
  return out;
}

}  // namespace memoe::cli
