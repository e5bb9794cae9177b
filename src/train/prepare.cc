#include "train/prepare.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/retrieval_text.h"
#include "io/text_corpus.h"
#include "io/tokenizer.h"
#include "io/utf8.h"
#include "train/counter_hash.h"

namespace memoe {

namespace fs = std::filesystem;

namespace {

constexpr uint64_t kSplitDomain = 0x73706C6974ull;  // "split"

// Removes a directory unless released: output of a failed run never stays.
class RemoveOnFailure {
 public:
  explicit RemoveOnFailure(std::string dir) : dir_(std::move(dir)) {}
  ~RemoveOnFailure() {
    std::error_code ec;
    if (!dir_.empty()) fs::remove_all(dir_, ec);
  }
  void release() { dir_.clear(); }

 private:
  std::string dir_;
};

}  // namespace

std::vector<int32_t> retrieval_document(Rng& rng, const std::vector<int32_t>& pool, int64_t max_tokens,
                                        const TextEncoder& encoder) {
  if (pool.empty()) return {};
  const std::vector<RetrievalTask> tasks = all_retrieval_tasks();
  RetrievalCounts counts;
  counts.distractors = 1 + int(rng.below(3));
  counts.values = 2 + int(rng.below(2));
  counts.queries = 2 + int(rng.below(2));
  RetrievalTask task = tasks[rng.below(tasks.size())];
  std::vector<std::vector<int32_t>> needles;
  std::vector<int32_t> question, answer;
  int64_t fixed = 0;
  // A family whose needles, question and answer do not fit falls back to
  // one needle; if even that does not fit, the length is too small.
  for (;;) {
    const RetrievalItem item = draw_retrieval_item(rng, task, KeySpace::training, counts);
    needles.clear();
    fixed = 0;
    for (const auto& [k, v] : item.needles) {
      needles.push_back(encoder.encode(needle_text(k, v)));
      fixed += int64_t(needles.back().size());
    }
    question = encoder.encode(question_text(item));
    answer = encoder.encode(answer_text(item));
    fixed += int64_t(question.size() + answer.size());
    if (fixed <= max_tokens) break;
    MEMOE_CHECK(task != RetrievalTask::single, "prepare: --retrieval-length ", max_tokens,
                " cannot hold one needle, its question and answer (", fixed, " tokens)");
    task = RetrievalTask::single;
  }
  // Filler of a random length up to what the document has room for.
  const int64_t room = std::max<int64_t>(0, max_tokens - fixed);
  const int64_t filler = std::min<int64_t>(int64_t(pool.size()), room / 4 + int64_t(rng.below(uint64_t(room - room / 4) + 1)));
  const int64_t offset = int64_t(rng.below(uint64_t(int64_t(pool.size()) - filler) + 1));
  std::vector<int64_t> at;
  for (size_t n = 0; n < needles.size(); ++n) at.push_back(int64_t(rng.below(uint64_t(filler) + 1)));
  std::vector<int32_t> doc;
  append_with_needles(doc, pool.data() + offset, filler, needles, at);
  doc.insert(doc.end(), question.begin(), question.end());
  doc.insert(doc.end(), answer.begin(), answer.end());
  return doc;
}

bool goes_to_val(uint64_t seed, uint64_t index, double val_fraction) {
  return unit_interval(counter_hash(seed, kSplitDomain, index)) < val_fraction;
}

TokenDataMeta prepare_data(const PrepareOptions& o, const TextEncoder& encoder) {
  MEMOE_CHECK(!o.inputs.empty(), "prepare: no --input files");
  MEMOE_CHECK(o.val_fraction > 0.0 && o.val_fraction < 1.0, "prepare: --val-fraction must be in (0, 1), got ",
              o.val_fraction);
  MEMOE_CHECK(bool(encoder.encode), "prepare: no encoder");
  MEMOE_CHECK(o.retrieval_mix >= 0.0 && o.retrieval_mix < 1.0, "prepare: --retrieval-mix must be in [0, 1), got ",
              o.retrieval_mix);
  MEMOE_CHECK(o.retrieval_length >= 64, "prepare: --retrieval-length must be >= 64 tokens, got ", o.retrieval_length);
  std::string out = o.out_dir;
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  MEMOE_CHECK(!out.empty(), "prepare: --out is empty");
  MEMOE_CHECK(!fs::exists(out), out, " already exists; remove it or choose another --out");
  for (const auto& path : o.inputs) check_text_input(path);

  const std::string tmp = out + ".tmp." + unique_temp_suffix();
  std::error_code ec;
  RemoveOnFailure cleanup(tmp);
  TokenDataMeta meta;
  {
    TokenShardWriter writer(tmp, encoder.vocab_size, encoder.eot_id, o.max_shard_tokens);
    uint64_t index = 0, to_train = 0, to_val = 0;
    // Retrieval documents follow the corpus's as it streams, keeping their
    // share of the train tokens at retrieval_mix; their filler comes from
    // the latest train documents.
    Rng rng(o.seed ^ 0x72657472696576ull);  // "retriev"
    int64_t corpus_tokens = 0, retrieval_tokens = 0;
    std::vector<int32_t> pool;
    const int64_t pool_size = 8 * o.retrieval_length;
    for (const auto& path : o.inputs) {
      writer.add_source(path);
      for_each_document(path, [&](const std::string& text) {
        const std::vector<int32_t> ids = encoder.encode(text);
        if (ids.empty()) return;
        const bool val = goes_to_val(o.seed, index++, o.val_fraction);
        ++(val ? to_val : to_train);
        writer.add_document(val ? "val" : "train", ids);
        if (val || o.retrieval_mix <= 0) return;
        corpus_tokens += int64_t(ids.size());
        pool.insert(pool.end(), ids.begin(), ids.end());
        if (int64_t(pool.size()) > pool_size) pool.erase(pool.begin(), pool.end() - pool_size);
        while (double(retrieval_tokens) < o.retrieval_mix * double(corpus_tokens + retrieval_tokens)) {
          const std::vector<int32_t> doc = retrieval_document(rng, pool, o.retrieval_length, encoder);
          if (doc.empty()) break;
          writer.add_document("train", doc);
          retrieval_tokens += int64_t(doc.size());
        }
      });
    }
    MEMOE_CHECK(to_train > 0 && to_val > 0, "prepare: need at least one document in each split, got train ", to_train,
                " and val ", to_val, " of ", index, " documents (--val-fraction ", o.val_fraction, ", --seed ", o.seed,
                ")");
    meta = writer.finish();
  }
  fs::rename(tmp, out, ec);
  MEMOE_CHECK(!ec, "cannot rename ", tmp, " to ", out, ": ", ec.message());
  cleanup.release();
  return meta;
}

TokenDataMeta prepare_data(const PrepareOptions& o) {
  MEMOE_CHECK(!o.tokenizer_dir.empty(), "prepare: --tokenizer is empty");
  MEMOE_CHECK(fs::is_directory(o.tokenizer_dir), "--tokenizer ", o.tokenizer_dir, ": no such directory");
  const Tokenizer tokenizer = Tokenizer::load(o.tokenizer_dir);
  TextEncoder encoder;
  encoder.encode = [&tokenizer](const std::string& text) { return tokenizer.encode(text); };
  encoder.vocab_size = tokenizer.vocab_size();
  encoder.eot_id = tokenizer.eos_id();
  MEMOE_CHECK(encoder.eot_id >= 0 && encoder.eot_id < encoder.vocab_size, o.tokenizer_dir,
              ": the tokenizer has no end-of-text id");
  return prepare_data(o, encoder);
}

}  // namespace memoe
