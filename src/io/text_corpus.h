// Text corpora: .txt (plain text) or .jsonl (one {"text": "..."} object per
// line; blank lines skipped). One reader checks every line (no NUL bytes,
// valid UTF-8, well-formed JSONL) for both uses:
//   - documents, for corpus preparation: a .txt holds one document per
//     blank-line-separated block, a .jsonl one per record;
//   - lines, for tokenizer training, where document boundaries do not
//     matter: the file's lines, or the lines of each "text".
// Lines come without "\n" or a trailing "\r". Errors are one line naming the
// file and, where it helps, the line and byte offset.
#pragma once
#include <cstdint>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

namespace memoe {

// Missing, not a regular file, empty, or of an unsupported extension: an
// error before any work is done.
void check_text_input(const std::string& path);

// Calls on_document for each document of the file, reading it line by line.
// A file with no document at all is an error.
void for_each_document(const std::string& path, const std::function<void(const std::string&)>& on_document);

// The same for a .jsonl whose records also hold a string label (e.g.
// {"text": ..., "genre": "humor"}): on_document(label, text). A record
// without the label, or a file that is not JSONL, is an error.
void for_each_labelled_document(const std::string& path, const std::string& label_field,
                                const std::function<void(const std::string&, const std::string&)>& on_document);

class TextLineReader {
 public:
  explicit TextLineReader(std::string path);

  // The next non-empty line, or false at the end (a file with no text at
  // all is an error).
  bool next(std::string& line);

  const std::string& path() const { return path_; }

 private:
  friend void for_each_document(const std::string&, const std::function<void(const std::string&)>&);
  friend void for_each_labelled_document(const std::string&, const std::string&,
                                         const std::function<void(const std::string&, const std::string&)>&);
  bool read_raw_line(std::string& raw);  // a checked physical line; false at end of file
  // A record's "text" (and, given label_field, that string field in *label).
  std::string jsonl_text(const std::string& raw, const std::string* label_field = nullptr,
                         std::string* label = nullptr) const;
  void queue_jsonl_record(const std::string& raw);        // its lines into pending_

  std::string path_;
  bool jsonl_ = false;
  std::ifstream in_;
  int64_t line_number_ = 0;  // 1-based number of the last raw line read
  uint64_t offset_ = 0;      // byte offset of the next raw line
  bool any_text_ = false;
  std::vector<std::string> pending_;  // lines of the current JSONL record
  size_t pending_next_ = 0;
};

}  // namespace memoe
