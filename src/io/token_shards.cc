#include "io/token_shards.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <system_error>

#include "core/error.h"
#include "io/atomic_file.h"

namespace memoe {

// Shards are raw little-endian; this engine only runs on little-endian hosts.
static_assert(std::endian::native == std::endian::little, "token shards assume a little-endian host");

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

std::string join_path(const std::string& dir, const std::string& name) { return (fs::path(dir) / name).string(); }

bool valid_split_name(const std::string& name) {
  if (name.empty() || name.size() > 64) return false;
  return std::all_of(name.begin(), name.end(),
                     [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'; });
}

// A shard name must stay inside the data directory: no separators, no "..".
bool valid_shard_name(const std::string& name) {
  if (name.empty() || name[0] == '.') return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
           c == '.';
  });
}

std::string shard_name(const std::string& split, size_t index) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "_%05zu.bin", index);
  return split + buf;
}

int64_t get_count(const json& j, const char* key, const std::string& where) {
  auto it = j.find(key);
  MEMOE_CHECK(it != j.end(), where, ": missing key '", key, "'");
  MEMOE_CHECK(it->is_number_integer(), where, ": key '", key, "' must be an integer");
  if (it->is_number_unsigned()) {
    MEMOE_CHECK(it->get<uint64_t>() <= uint64_t(INT64_MAX), where, ": key '", key, "' is too large");
  } else {
    MEMOE_CHECK(it->get<int64_t>() >= 0, where, ": key '", key, "' must not be negative");
  }
  return it->get<int64_t>();
}

TokenSplitMeta parse_split(const json& j, const std::string& where) {
  MEMOE_CHECK(j.is_object(), where, ": must be an object");
  TokenSplitMeta split;
  split.tokens = get_count(j, "tokens", where);
  split.documents = get_count(j, "documents", where);
  auto shards = j.find("shards");
  MEMOE_CHECK(shards != j.end() && shards->is_array(), where, ": 'shards' must be an array of file names");
  auto counts = j.find("shard_tokens");
  MEMOE_CHECK(counts != j.end() && counts->is_array(), where, ": 'shard_tokens' must be an array of integers");
  MEMOE_CHECK(shards->size() == counts->size(), where, ": ", shards->size(), " shards but ", counts->size(),
              " shard_tokens entries");
  int64_t sum = 0;
  for (size_t i = 0; i < shards->size(); ++i) {
    const json& name = (*shards)[i];
    MEMOE_CHECK(name.is_string() && valid_shard_name(name.get<std::string>()), where, ": shard ", i,
                " is not a plain file name");
    const json& n = (*counts)[i];
    MEMOE_CHECK(n.is_number_integer() && n.get<int64_t>() > 0, where, ": shard_tokens[", i,
                "] must be a positive integer");
    split.shards.push_back(name.get<std::string>());
    split.shard_tokens.push_back(n.get<int64_t>());
    MEMOE_CHECK(sum <= INT64_MAX - split.shard_tokens.back(), where, ": shard_tokens overflow");
    sum += split.shard_tokens.back();
  }
  MEMOE_CHECK(sum == split.tokens, where, ": shard_tokens sum to ", sum, " but 'tokens' is ", split.tokens);
  MEMOE_CHECK(split.documents <= split.tokens, where, ": ", split.documents, " documents cannot fit in ", split.tokens,
              " tokens (each ends with eot)");
  return split;
}

json split_to_json(const TokenSplitMeta& s) {
  return json{{"shards", s.shards}, {"shard_tokens", s.shard_tokens}, {"tokens", s.tokens}, {"documents", s.documents}};
}

}  // namespace

TokenDataMeta read_token_meta(const std::string& dir) {
  const std::string path = join_path(dir, "meta.json");
  MEMOE_CHECK(fs::exists(path), "cannot open ", path, ": ", os_reason(ENOENT));
  std::ifstream in(path, std::ios::binary);
  MEMOE_CHECK(in.good(), "cannot open ", path);
  json j;
  try {
    j = json::parse(in);
  } catch (const json::exception& e) {
    fail(path, ": not valid JSON (", e.what(), ")");
  }
  MEMOE_CHECK(j.is_object(), path, ": must be a JSON object");
  auto format = j.find("format");
  MEMOE_CHECK(format != j.end() && format->is_string() && format->get<std::string>() == kTokenFormat, path,
              ": 'format' must be \"", kTokenFormat, "\"");
  auto dtype = j.find("dtype");
  MEMOE_CHECK(dtype != j.end() && dtype->is_string() && dtype->get<std::string>() == "uint32", path,
              ": 'dtype' must be \"uint32\"");
  TokenDataMeta meta;
  meta.vocab_size = get_count(j, "vocab_size", path);
  MEMOE_CHECK(meta.vocab_size > 0 && meta.vocab_size <= (int64_t(1) << 32), path, ": vocab_size ", meta.vocab_size,
              " is out of range");
  meta.eot_id = get_count(j, "eot_id", path);
  MEMOE_CHECK(meta.eot_id < meta.vocab_size, path, ": eot_id ", meta.eot_id, " >= vocab_size ", meta.vocab_size);
  auto splits = j.find("splits");
  MEMOE_CHECK(splits != j.end() && splits->is_object(), path, ": 'splits' must be an object");
  std::set<std::string> names;
  for (auto it = splits->begin(); it != splits->end(); ++it) {
    MEMOE_CHECK(valid_split_name(it.key()), path, ": bad split name '", it.key(), "'");
    TokenSplitMeta split = parse_split(it.value(), path + ": split '" + it.key() + "'");
    for (const auto& shard : split.shards)
      MEMOE_CHECK(names.insert(shard).second, path, ": shard ", shard, " is listed twice");
    meta.splits.emplace(it.key(), std::move(split));
  }
  auto sources = j.find("sources");
  if (sources != j.end()) {
    MEMOE_CHECK(sources->is_array(), path, ": 'sources' must be an array of strings");
    for (const auto& s : *sources) {
      MEMOE_CHECK(s.is_string(), path, ": 'sources' must be an array of strings");
      meta.sources.push_back(s.get<std::string>());
    }
  }
  return meta;
}

// ---------------------------------------------------------------- writer

struct TokenShardWriter::OpenShard {
  explicit OpenShard(const std::string& path) : file(path) {}
  AtomicFileWriter file;
  std::string name;
  int64_t tokens = 0;
};

TokenShardWriter::TokenShardWriter(std::string dir, int64_t vocab_size, int64_t eot_id, int64_t max_shard_tokens)
    : dir_(std::move(dir)), max_shard_tokens_(max_shard_tokens) {
  MEMOE_CHECK(vocab_size > 0 && vocab_size <= (int64_t(1) << 32), "token shards: vocab_size ", vocab_size,
              " is out of range");
  MEMOE_CHECK(eot_id >= 0 && eot_id < vocab_size, "token shards: eot_id ", eot_id, " is not in [0, ", vocab_size, ")");
  MEMOE_CHECK(max_shard_tokens > 0, "token shards: max_shard_tokens must be positive, got ", max_shard_tokens);
  std::error_code ec;
  fs::create_directories(dir_, ec);
  MEMOE_CHECK(!ec, "cannot create ", dir_, ": ", ec.message());
  MEMOE_CHECK(!fs::exists(join_path(dir_, "meta.json")), dir_, " already holds a token data set (meta.json)");
  meta_.vocab_size = vocab_size;
  meta_.eot_id = eot_id;
}

TokenShardWriter::~TokenShardWriter() = default;

void TokenShardWriter::add_source(const std::string& source) {
  MEMOE_CHECK(!finished_, "token shards: writer already finished");
  meta_.sources.push_back(source);
}

void TokenShardWriter::add_document(const std::string& split, const int32_t* ids, size_t count) {
  MEMOE_CHECK(!finished_, "token shards: writer already finished");
  MEMOE_CHECK(valid_split_name(split), "token shards: bad split name '", split, "'");
  scratch_.resize(count + 1);
  for (size_t i = 0; i < count; ++i) {
    MEMOE_CHECK(ids[i] >= 0 && ids[i] < meta_.vocab_size, "token shards: token id ", ids[i], " is not in [0, ",
                meta_.vocab_size, ")");
    scratch_[i] = uint32_t(ids[i]);
  }
  scratch_[count] = uint32_t(meta_.eot_id);
  append_tokens(split, scratch_.data(), scratch_.size());
  meta_.splits[split].documents += 1;
}

void TokenShardWriter::append_tokens(const std::string& split, const uint32_t* ids, size_t count) {
  TokenSplitMeta& info = meta_.splits[split];
  while (count > 0) {
    auto& shard = open_[split];
    if (!shard) {  // opened lazily, so no split ends with an empty shard
      const std::string name = shard_name(split, info.shards.size());
      shard = std::make_unique<OpenShard>(join_path(dir_, name));
      shard->name = name;
    }
    const size_t room = size_t(max_shard_tokens_ - shard->tokens);
    const size_t n = std::min(room, count);
    shard->file.write(ids, n * sizeof(uint32_t));
    shard->tokens += int64_t(n);
    info.tokens += int64_t(n);
    ids += n;
    count -= n;
    if (shard->tokens == max_shard_tokens_) close_shard(split);
  }
}

void TokenShardWriter::close_shard(const std::string& split) {
  auto it = open_.find(split);
  if (it == open_.end() || !it->second) return;
  it->second->file.commit();
  TokenSplitMeta& info = meta_.splits[split];
  info.shards.push_back(it->second->name);
  info.shard_tokens.push_back(it->second->tokens);
  open_.erase(it);
}

TokenDataMeta TokenShardWriter::finish() {
  MEMOE_CHECK(!finished_, "token shards: writer already finished");
  std::vector<std::string> splits;
  for (const auto& [name, shard] : open_) splits.push_back(name);
  for (const auto& name : splits) close_shard(name);
  json splits_json = json::object();
  for (const auto& [name, info] : meta_.splits) splits_json[name] = split_to_json(info);
  const json j = {{"format", kTokenFormat}, {"dtype", "uint32"},     {"vocab_size", meta_.vocab_size},
                  {"eot_id", meta_.eot_id}, {"splits", splits_json}, {"sources", meta_.sources}};
  write_file_atomic(join_path(dir_, "meta.json"), j.dump(2) + "\n");
  finished_ = true;
  return meta_;
}

// ---------------------------------------------------------------- reader

TokenSplitReader::TokenSplitReader(const std::string& dir, const std::string& split, bool scan_ids)
    : dir_(dir), split_(split), meta_(read_token_meta(dir)) {
  auto it = meta_.splits.find(split);
  if (it == meta_.splits.end()) {
    std::string have;
    for (const auto& [name, info] : meta_.splits) have += (have.empty() ? "" : ", ") + name;
    fail(join_path(dir, "meta.json"), ": no split '", split, "' (have: ", have.empty() ? "none" : have, ")");
  }
  const TokenSplitMeta& info = it->second;
  for (size_t i = 0; i < info.shards.size(); ++i) {
    Shard shard;
    shard.path = join_path(dir, info.shards[i]);
    shard.file = std::make_unique<MappedFile>(shard.path);
    const size_t bytes = shard.file->size();
    MEMOE_CHECK(bytes % sizeof(uint32_t) == 0, shard.path, ": size ", bytes, " bytes is not a multiple of 4");
    shard.tokens = int64_t(bytes / sizeof(uint32_t));
    MEMOE_CHECK(shard.tokens == info.shard_tokens[i], shard.path, ": holds ", shard.tokens,
                " tokens but meta.json says ", info.shard_tokens[i]);
    shard.first = total_tokens_;
    total_tokens_ += shard.tokens;
    if (scan_ids) scan(shard);
    shards_.push_back(std::move(shard));
  }
}

void TokenSplitReader::scan(const Shard& shard) const {
  constexpr int64_t kChunk = int64_t(4) << 20;  // tokens per pass: 16 MiB
  const uint32_t* ids = shard.ids();
  const uint64_t vocab = uint64_t(meta_.vocab_size);
  for (int64_t begin = 0; begin < shard.tokens; begin += kChunk) {
    const int64_t end = std::min(shard.tokens, begin + kChunk);
    uint32_t worst = 0;
    for (int64_t i = begin; i < end; ++i) worst = std::max(worst, ids[i]);
    if (worst >= vocab) {
      for (int64_t i = begin; i < end; ++i) check_id(shard, i, ids[i]);
    }
    shard.file->release(size_t(begin) * sizeof(uint32_t), size_t(end - begin) * sizeof(uint32_t));
  }
}

void TokenSplitReader::check_id(const Shard& shard, int64_t index, uint32_t id) const {
  MEMOE_CHECK(id < uint64_t(meta_.vocab_size), shard.path, ": token ", index, " has id ", id, " >= vocab_size ",
              meta_.vocab_size);
}

size_t TokenSplitReader::shard_of(int64_t position) const {
  // First shard whose range ends after `position`.
  auto it = std::upper_bound(shards_.begin(), shards_.end(), position,
                             [](int64_t pos, const Shard& s) { return pos < s.first + s.tokens; });
  return size_t(it - shards_.begin());
}

uint32_t TokenSplitReader::at(int64_t position) const {
  MEMOE_CHECK(position >= 0 && position < total_tokens_, "token ", position, " is outside split '", split_, "' (",
              total_tokens_, " tokens)");
  const Shard& s = shards_[shard_of(position)];
  const int64_t offset = position - s.first;
  const uint32_t id = s.ids()[offset];
  check_id(s, offset, id);  // as read() does: a file changed since the scan, or never scanned
  return id;
}

void TokenSplitReader::read(int64_t start, int64_t count, int64_t* out) const {
  MEMOE_CHECK(start >= 0 && count >= 0 && start <= total_tokens_ - count, "tokens [", start, ", ", start + count,
              ") are outside split '", split_, "' (", total_tokens_, " tokens)");
  const uint64_t vocab = uint64_t(meta_.vocab_size);
  size_t index = count > 0 ? shard_of(start) : 0;
  while (count > 0) {
    const Shard& s = shards_[index++];
    const int64_t offset = start - s.first;
    const int64_t n = std::min(count, s.tokens - offset);
    const uint32_t* ids = s.ids() + offset;
    for (int64_t i = 0; i < n; ++i) {
      // Cheap, and keeps a file changed since the scan from reaching the model.
      if (ids[i] >= vocab) check_id(s, offset + i, ids[i]);
      out[i] = int64_t(ids[i]);
    }
    out += n;
    start += n;
    count -= n;
  }
}

}  // namespace memoe
