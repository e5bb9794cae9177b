#include "train/prepare.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/tokenizer.h"
#include "io/utf8.h"
#include "train/counter_hash.h"

namespace memoe {

namespace fs = std::filesystem;

namespace {

constexpr uint64_t kSplitDomain = 0x73706C6974ull;  // "split"

enum class InputKind { Text, JsonLines };

InputKind input_kind(const std::string& path) {
  std::string ext = fs::path(path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  if (ext == ".txt") return InputKind::Text;
  if (ext == ".jsonl") return InputKind::JsonLines;
  fail(path, ": unknown input type '", ext, "' (expected .txt or .jsonl)");
}

// Missing, unreadable or empty inputs fail before any work is done.
void check_input(const std::string& path) {
  std::error_code ec;
  const auto status = fs::status(path, ec);
  MEMOE_CHECK(fs::exists(status), "cannot open ", path, ": No such file or directory");
  MEMOE_CHECK(fs::is_regular_file(status), path, " is not a regular file");
  MEMOE_CHECK(fs::file_size(path, ec) > 0 && !ec, path, ": empty file");
  (void)input_kind(path);
}

bool blank(const std::string& line) {
  return std::all_of(line.begin(), line.end(), [](char c) { return c == ' ' || c == '\t' || c == '\r'; });
}

// Reads `path` line by line, checking each line is text; on_line gets the
// line (without "\n" or a trailing "\r") and its 1-based number.
void for_each_line(const std::string& path, const std::function<void(const std::string&, int64_t)>& on_line) {
  std::ifstream in(path, std::ios::binary);
  MEMOE_CHECK(in.good(), "cannot open ", path);
  std::string line;
  int64_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (number == 1 && line.rfind("\xEF\xBB\xBF", 0) == 0) line.erase(0, 3);  // byte-order mark
    if (!line.empty() && line.back() == '\r') line.pop_back();
    MEMOE_CHECK(line.find('\0') == std::string::npos, path, ": binary file (NUL byte on line ", number, ")");
    const size_t bad = find_invalid_utf8(line);
    MEMOE_CHECK(bad == std::string::npos, path, ":", number, ": invalid UTF-8 at byte ", bad + 1);
    on_line(line, number);
  }
  MEMOE_CHECK(!in.bad(), "cannot read ", path);
}

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

void for_each_document(const std::string& path, const std::function<void(const std::string&)>& on_document) {
  check_input(path);
  int64_t documents = 0;
  if (input_kind(path) == InputKind::Text) {
    std::string doc;
    auto flush = [&] {
      if (doc.empty()) return;
      ++documents;
      on_document(doc);
      doc.clear();
    };
    for_each_line(path, [&](const std::string& line, int64_t) {
      if (blank(line)) return flush();
      if (!doc.empty()) doc += '\n';
      doc += line;
    });
    flush();
  } else {
    for_each_line(path, [&](const std::string& line, int64_t number) {
      if (blank(line)) return;
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
      } catch (const nlohmann::json::exception&) {
        fail(path, ":", number, ": not valid JSON");
      }
      auto text = j.is_object() ? j.find("text") : j.end();
      MEMOE_CHECK(j.is_object() && text != j.end() && text->is_string(), path, ":", number,
                  ": expected a JSON object with a string \"text\"");
      const std::string& doc = text->get_ref<const std::string&>();
      // "\u0000" escapes decode to NUL, which no tokenizer should see.
      MEMOE_CHECK(doc.find('\0') == std::string::npos, path, ":", number, ": \"text\" contains a NUL character");
      if (doc.empty()) return;
      ++documents;
      on_document(doc);
    });
  }
  MEMOE_CHECK(documents > 0, path, ": no documents (only blank lines or empty texts)");
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
  for (const auto& path : o.inputs) check_input(path);

  const std::string tmp = out + ".tmp";
  std::error_code ec;
  fs::remove_all(tmp, ec);  // left over from an interrupted run
  MEMOE_CHECK(!ec, "cannot remove stale ", tmp, ": ", ec.message());
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
