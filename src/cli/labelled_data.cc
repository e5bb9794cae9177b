#include "cli/labelled_data.h"

#include <map>

#include "core/error.h"
#include "io/text_corpus.h"

namespace memoe::cli {

LabelledIds labelled_ids(const Tokenizer& tok, const std::vector<std::string>& files, const std::string& label_field,
                         int64_t max_tokens) {
  MEMOE_CHECK(!files.empty(), "no labelled data files given");
  std::map<std::string, std::vector<int64_t>> by_label;
  for (const std::string& f : files) {
    check_text_input(f);
    for_each_labelled_document(f, label_field, [&](const std::string& label, const std::string& text) {
      std::vector<int64_t>& ids = by_label[label];
      if (max_tokens > 0 && int64_t(ids.size()) >= max_tokens) return;
      // As in training data: every document follows an end-of-text id.
      ids.push_back(tok.eos_id());
      for (int32_t id : tok.encode(text)) ids.push_back(id);
      if (max_tokens > 0 && int64_t(ids.size()) > max_tokens) ids.resize(size_t(max_tokens));
    });
  }
  LabelledIds out;
  for (auto& [label, ids] : by_label) {
    out.domains.push_back(label);
    out.ids.push_back(std::move(ids));
  }
  return out;
}

}  // namespace memoe::cli
