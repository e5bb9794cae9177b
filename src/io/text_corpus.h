// Streams the lines of a training text file for the tokenizer trainer.
//
// Inputs: .txt (plain text) or .jsonl (one {"text": "..."} object per line;
// blank lines are skipped). Document boundaries do not matter to tokenizer
// training, so both kinds reduce to lines: the file's lines, or the lines of
// each "text". (For corpus preparation the same files read as documents: a
// .txt holds one document per blank-line-separated block.) Lines come
// without "\n" or a trailing "\r"; empty lines are skipped.
#pragma once
#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

namespace memoe {

class TextLineReader {
 public:
  // Errors (one line, naming the file): missing, not a regular file,
  // unsupported extension.
  explicit TextLineReader(std::string path);

  // The next non-empty line, or false at the end. Errors name the file and,
  // where it helps, the line and byte offset: NUL bytes (binary data),
  // invalid UTF-8, malformed JSONL, a file with no text at all.
  bool next(std::string& line);

  const std::string& path() const { return path_; }

 private:
  bool read_raw_line(std::string& raw);  // false at end of file
  void queue_jsonl_record(const std::string& raw);

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
