#include "train/prepare.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/atomic_file.h"
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

bool goes_to_val(uint64_t seed, uint64_t index, double val_fraction) {
  return unit_interval(counter_hash(seed, kSplitDomain, index)) < val_fraction;
}

TokenDataMeta prepare_data(const PrepareOptions& o, const TextEncoder& encoder) {
  MEMOE_CHECK(!o.inputs.empty(), "prepare: no --input files");
  MEMOE_CHECK(o.val_fraction > 0.0 && o.val_fraction < 1.0, "prepare: --val-fraction must be in (0, 1), got ",
              o.val_fraction);
  MEMOE_CHECK(bool(encoder.encode), "prepare: no encoder");
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
    for (const auto& path : o.inputs) {
      writer.add_source(path);
      for_each_document(path, [&](const std::string& text) {
        const std::vector<int32_t> ids = encoder.encode(text);
        if (ids.empty()) return;
        const bool val = goes_to_val(o.seed, index++, o.val_fraction);
        ++(val ? to_val : to_train);
        writer.add_document(val ? "val" : "train", ids);
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
