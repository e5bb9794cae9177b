// Tokenized corpora on disk ("memoe-tokens-v1"): a directory with meta.json
// and shard files <split>_00000.bin, ... holding raw little-endian uint32
// token ids. Every document is followed by the end-of-text id, so a split is
// one token stream in which eot separates documents; shards cut that stream
// at a fixed size, so a document may continue in the next shard.
//
// meta.json:
//   {"format": "memoe-tokens-v1", "dtype": "uint32", "vocab_size": V,
//    "eot_id": E, "splits": {"train": {"shards": ["train_00000.bin", ...],
//    "shard_tokens": [n0, ...], "tokens": N, "documents": D}, "val": {...}},
//    "sources": ["input paths", ...]}
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "io/mapped_file.h"

namespace memoe {

inline constexpr const char* kTokenFormat = "memoe-tokens-v1";
inline constexpr int64_t kDefaultShardTokens = int64_t(64) << 20;

struct TokenSplitMeta {
  std::vector<std::string> shards;    // file names inside the data directory
  std::vector<int64_t> shard_tokens;  // tokens in each shard
  int64_t tokens = 0;                 // sum of shard_tokens
  int64_t documents = 0;
};

struct TokenDataMeta {
  int64_t vocab_size = 0;
  int64_t eot_id = 0;
  std::map<std::string, TokenSplitMeta> splits;
  std::vector<std::string> sources;
};

// Reads and checks DIR/meta.json (not the shards); errors name the file.
TokenDataMeta read_token_meta(const std::string& dir);

// Builds a data directory. Shards are written atomically (a reader never
// sees a half-written one) and meta.json comes last, so a directory without
// meta.json is an unfinished one. Destroying the writer before finish()
// leaves no temporary files behind, but may leave completed shards.
class TokenShardWriter {
 public:
  TokenShardWriter(std::string dir, int64_t vocab_size, int64_t eot_id, int64_t max_shard_tokens = kDefaultShardTokens);
  ~TokenShardWriter();
  TokenShardWriter(const TokenShardWriter&) = delete;
  TokenShardWriter& operator=(const TokenShardWriter&) = delete;

  // Appends one document (its ids, then eot) to `split`. Ids must be in
  // [0, vocab_size); the split name must be lowercase letters, digits, '_'.
  void add_document(const std::string& split, const int32_t* ids, size_t count);
  void add_document(const std::string& split, const std::vector<int32_t>& ids) {
    add_document(split, ids.data(), ids.size());
  }
  // Records an input's name in meta.json "sources".
  void add_source(const std::string& source);
  // Commits the open shards, then writes meta.json. Call once.
  TokenDataMeta finish();

  const TokenDataMeta& meta() const { return meta_; }

 private:
  struct OpenShard;
  void append_tokens(const std::string& split, const uint32_t* ids, size_t count);
  void close_shard(const std::string& split);

  std::string dir_;
  int64_t max_shard_tokens_;
  TokenDataMeta meta_;
  std::map<std::string, std::unique_ptr<OpenShard>> open_;
  std::vector<uint32_t> scratch_;  // one document converted to uint32
  bool finished_ = false;
};

// One split of a data directory as a single token stream over mapped shards.
class TokenSplitReader {
 public:
  // Validates meta.json, the split's shard sizes and, when scan_ids is set,
  // that every id is < vocab_size (reads the whole split once).
  TokenSplitReader(const std::string& dir, const std::string& split, bool scan_ids = true);

  int64_t size() const { return total_tokens_; }
  int64_t vocab_size() const { return meta_.vocab_size; }
  int64_t eot_id() const { return meta_.eot_id; }
  const TokenDataMeta& meta() const { return meta_; }
  const std::string& split() const { return split_; }

  // Copies tokens [start, start + count) of the stream to out (across shard
  // boundaries). Both read() and at() check every id they return against
  // vocab_size, scanned or not: an id >= vocab_size throws, naming the shard
  // file and the token's index in it.
  void read(int64_t start, int64_t count, int64_t* out) const;
  uint32_t at(int64_t position) const;

 private:
  struct Shard {
    std::string path;
    std::unique_ptr<MappedFile> file;
    int64_t first = 0;  // stream position of the shard's first token
    int64_t tokens = 0;
    const uint32_t* ids() const { return reinterpret_cast<const uint32_t*>(file->data()); }
  };
  size_t shard_of(int64_t position) const;
  void scan(const Shard& shard) const;
  void check_id(const Shard& shard, int64_t index, uint32_t id) const;  // throws when id >= vocab_size

  std::string dir_, split_;
  TokenDataMeta meta_;
  std::vector<Shard> shards_;
  int64_t total_tokens_ = 0;
};

}  // namespace memoe
