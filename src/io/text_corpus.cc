#include "io/text_corpus.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/utf8.h"

namespace memoe {

namespace fs = std::filesystem;

namespace {
std::string lower_extension(const std::string& path) {
  std::string ext = fs::path(path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return ext;
}

bool blank(const std::string& line) { return line.find_first_not_of(" \t") == std::string::npos; }

void strip_cr(std::string& line) {
  if (!line.empty() && line.back() == '\r') line.pop_back();
}
}  // namespace

void check_text_input(const std::string& path) {
  std::error_code ec;
  const auto status = fs::status(path, ec);
  MEMOE_CHECK(fs::exists(status), "cannot open ", path, ": No such file or directory");
  MEMOE_CHECK(fs::is_regular_file(status), path, " is not a regular file");
  const std::string ext = lower_extension(path);
  MEMOE_CHECK(ext == ".txt" || ext == ".jsonl", path, ": unsupported input type '", ext,
              "' (expected .txt or .jsonl)");
  MEMOE_CHECK(fs::file_size(path, ec) > 0 && !ec, path, ": empty file");
}

TextLineReader::TextLineReader(std::string path) : path_(std::move(path)) {
  check_text_input(path_);
  jsonl_ = lower_extension(path_) == ".jsonl";
  in_.open(path_, std::ios::binary);
  MEMOE_CHECK(in_.good(), "cannot open ", path_);
}

bool TextLineReader::read_raw_line(std::string& raw) {
  if (!std::getline(in_, raw)) {
    MEMOE_CHECK(!in_.bad(), "cannot read ", path_);
    return false;
  }
  const uint64_t start = offset_;
  offset_ += raw.size() + 1;
  ++line_number_;
  size_t skip = 0;
  if (line_number_ == 1 && raw.rfind("\xEF\xBB\xBF", 0) == 0) skip = 3;  // byte-order mark
  const size_t nul = raw.find('\0');
  MEMOE_CHECK(nul == std::string::npos, path_, ": binary data, not text (NUL byte at byte offset ", start + nul,
              ", line ", line_number_, ")");
  const size_t bad = find_invalid_utf8(std::string_view(raw).substr(skip));
  MEMOE_CHECK(bad == std::string_view::npos, path_, ": invalid UTF-8 at byte offset ", start + skip + bad, " (line ",
              line_number_, ")");
  raw.erase(0, skip);
  strip_cr(raw);
  return true;
}

std::string TextLineReader::jsonl_text(const std::string& raw, const std::string* label_field,
                                       std::string* label) const {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(raw);
  } catch (const nlohmann::json::exception&) {
    fail(path_, ":", line_number_, ": not valid JSON");
  }
  const auto text = j.is_object() ? j.find("text") : j.end();
  MEMOE_CHECK(j.is_object() && text != j.end() && text->is_string(), path_, ":", line_number_,
              ": expected a JSON object with a string \"text\"");
  if (label_field) {
    const auto value = j.find(*label_field);
    MEMOE_CHECK(value != j.end() && value->is_string() && !value->get<std::string>().empty(), path_, ":",
                line_number_, ": expected a non-empty string \"", *label_field, "\" (the document's label)");
    *label = value->get<std::string>();
  }
  std::string doc = text->get<std::string>();
  // "\u0000" escapes decode to NUL, which is no text a tokenizer should learn.
  MEMOE_CHECK(doc.find('\0') == std::string::npos, path_, ":", line_number_, ": \"text\" contains a NUL character");
  return doc;
}

void for_each_document(const std::string& path, const std::function<void(const std::string&)>& on_document) {
  TextLineReader reader(path);
  int64_t documents = 0;
  std::string raw, doc;
  auto flush = [&] {
    if (doc.empty()) return;
    ++documents;
    on_document(doc);
    doc.clear();
  };
  while (reader.read_raw_line(raw)) {
    if (blank(raw)) {
      if (!reader.jsonl_) flush();
      continue;
    }
    if (reader.jsonl_) {
      doc = reader.jsonl_text(raw);
      flush();
    } else {
      if (!doc.empty()) doc += '\n';
      doc += raw;
    }
  }
  flush();
  MEMOE_CHECK(documents > 0, path, ": no documents (only blank lines or empty texts)");
}

void for_each_labelled_document(const std::string& path, const std::string& label_field,
                                const std::function<void(const std::string&, const std::string&)>& on_document) {
  TextLineReader reader(path);
  MEMOE_CHECK(reader.jsonl_, path, ": labelled documents must be JSONL (one {\"text\": ..., \"", label_field,
              "\": ...} a line)");
  int64_t documents = 0;
  std::string raw, label;
  while (reader.read_raw_line(raw)) {
    if (blank(raw)) continue;
    const std::string doc = reader.jsonl_text(raw, &label_field, &label);
    if (doc.empty()) continue;
    ++documents;
    on_document(label, doc);
  }
  MEMOE_CHECK(documents > 0, path, ": no documents (only blank lines or empty texts)");
}

void TextLineReader::queue_jsonl_record(const std::string& raw) {
  const std::string doc = jsonl_text(raw);
  pending_.clear();
  pending_next_ = 0;
  size_t begin = 0;
  while (begin <= doc.size()) {
    size_t end = doc.find('\n', begin);
    if (end == std::string::npos) end = doc.size();
    std::string line = doc.substr(begin, end - begin);
    strip_cr(line);
    if (!line.empty()) pending_.push_back(std::move(line));
    begin = end + 1;
  }
}

bool TextLineReader::next(std::string& line) {
  std::string raw;
  while (true) {
    if (pending_next_ < pending_.size()) {
      line = std::move(pending_[pending_next_++]);
      any_text_ = true;
      return true;
    }
    if (!read_raw_line(raw)) break;
    if (!jsonl_) {
      if (raw.empty()) continue;
      line = std::move(raw);
      any_text_ = any_text_ || line.find_first_not_of(" \t") != std::string::npos;
      return true;
    }
    if (blank(raw)) continue;  // blank JSONL line
    queue_jsonl_record(raw);
  }
  MEMOE_CHECK(any_text_, path_, ": no text (the file is empty or holds only blank lines",
              jsonl_ ? " and empty texts)" : ")");
  return false;
}

}  // namespace memoe
