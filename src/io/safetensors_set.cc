#include "io/safetensors_set.h"

#include <algorithm>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/format_util.h"

namespace memoe {

namespace fs = std::filesystem;
using nlohmann::json;

std::string shard_file_name(const std::string& stem, int k, int n) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "-%05d-of-%05d.safetensors", k, n);
  return stem + buf;
}

std::string index_file_name(const std::string& stem) { return stem + ".safetensors.index.json"; }

std::string piece_name(const std::string& name, int64_t begin, int64_t end, int64_t numel) {
  if (begin == 0 && end == numel) return name;
  return name + "[" + std::to_string(begin) + ":" + std::to_string(end) + "]";
}

namespace {

// NAME[begin:end] -> (NAME, begin, end); false for a plain name.
bool parse_piece(const std::string& stored, std::string& name, int64_t& begin, int64_t& end) {
  if (stored.empty() || stored.back() != ']') return false;
  const size_t open = stored.rfind('['), colon = stored.rfind(':');
  if (open == std::string::npos || colon == std::string::npos || colon < open) return false;
  try {
    size_t used = 0;
    const std::string b = stored.substr(open + 1, colon - open - 1), e = stored.substr(colon + 1, stored.size() - colon - 2);
    begin = std::stoll(b, &used);
    if (used != b.size()) return false;
    end = std::stoll(e, &used);
    if (used != e.size()) return false;
  } catch (const std::exception&) {
    return false;
  }
  name = stored.substr(0, open);
  return true;
}

}  // namespace

SafetensorsSet SafetensorsSet::open(const std::string& dir, const std::string& stem) {
  SafetensorsSet s;
  const fs::path index = fs::path(dir) / index_file_name(stem);
  std::error_code ec;
  if (!fs::exists(index, ec)) {
    s.path_ = (fs::path(dir) / (stem + ".safetensors")).string();
    s.files_.push_back(SafetensorsFile::open(s.path_));
    for (const std::string& name : s.files_[0].names()) s.where_[name] = 0;
    s.metadata_ = s.files_[0].metadata();
    return s;
  }
  s.path_ = index.string();
  s.index_ = true;
  json j;
  try {
    std::ifstream in(index);
    MEMOE_CHECK(in, "cannot read ", s.path_);
    j = json::parse(in);
  } catch (const json::exception& e) {
    fail(s.path_, ": malformed index (", e.what(), ")");
  }
  MEMOE_CHECK(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(), s.path_,
              ": no \"weight_map\" object");
  std::map<std::string, size_t> file_ids;
  for (const auto& [name, file] : j["weight_map"].items()) {
    MEMOE_CHECK(file.is_string(), s.path_, ": the file of ", quoted(name), " is not a string");
    const std::string f = file.get<std::string>();
    MEMOE_CHECK(!f.empty() && f.find('/') == std::string::npos && f != "." && f != "..", s.path_, ": file ",
                quoted(f), " of ", quoted(name), " is not a file name in ", dir);
    auto [it, fresh] = file_ids.emplace(f, s.files_.size());
    if (fresh) s.files_.push_back(SafetensorsFile::open((fs::path(dir) / f).string()));
    MEMOE_CHECK(s.files_[it->second].has(name), s.path_, ": ", f, " does not hold ", quoted(name),
                " as the index says");
    s.where_[name] = it->second;
  }
  if (j.contains("metadata") && j["metadata"].is_object())
    for (const auto& [key, value] : j["metadata"].items())
      s.metadata_[key] = value.is_string() ? value.get<std::string>() : value.dump();
  return s;
}

std::vector<std::string> SafetensorsSet::names() const {
  std::vector<std::string> out;
  for (const auto& [name, file] : where_) out.push_back(name);
  return out;
}

const SafetensorsFile& SafetensorsSet::file_of(const std::string& name) const {
  auto it = where_.find(name);
  MEMOE_CHECK(it != where_.end(), path_, ": missing tensor ", name);
  return files_[it->second];
}

void SafetensorsSet::read_part(const std::string& stored, int64_t begin, int64_t end, float* out) const {
  // An F32 tensor's part straight from the mapping; other dtypes are
  // converted whole (small tensors only, in practice).
  if (info(stored).dtype == DType::F32) {
    const std::span<const uint8_t> bytes = raw_bytes(stored);
    std::memcpy(out, bytes.data() + size_t(begin) * sizeof(float), size_t(end - begin) * sizeof(float));
    return;
  }
  const Tensor whole = file_of(stored).read_f32(stored);
  std::copy(whole.data() + begin, whole.data() + end, out);
}

void SafetensorsSet::read_range(const std::string& name, int64_t numel, int64_t begin, int64_t end,
                                float* out) const {
  MEMOE_CHECK(0 <= begin && begin <= end && end <= numel, "read_range: [", begin, ":", end, "] is outside ", name);
  if (begin == end) return;
  if (has(name)) {
    const TensorInfo& info = this->info(name);
    MEMOE_CHECK(info.numel() == numel, path_, ": tensor ", name, " holds ", info.numel(), " values, expected ", numel);
    if (begin == 0 && end == numel) return read_f32_into(name, out, numel);
    read_part(name, begin, end, out);
    return;
  }
  // The pieces, in order of their ranges, must cover [begin, end) exactly.
  struct Piece {
    int64_t begin, end;
    std::string stored;
  };
  std::vector<Piece> pieces;
  // Pieces sort right after "NAME[" in the name map.
  for (auto it = where_.lower_bound(name + "["); it != where_.end() && it->first.rfind(name + "[", 0) == 0; ++it) {
    const std::string& stored = it->first;
    std::string base;
    int64_t b = 0, e = 0;
    if (!parse_piece(stored, base, b, e) || base != name) continue;
    MEMOE_CHECK(0 <= b && b < e && e <= numel, path_, ": piece ", stored, " lies outside the tensor's ", numel,
                " values");
    MEMOE_CHECK(this->info(stored).numel() == e - b, path_, ": piece ", stored, " holds ",
                this->info(stored).numel(), " values");
    pieces.push_back({b, e, stored});
  }
  MEMOE_CHECK(!pieces.empty(), path_, ": missing tensor ", name);
  std::sort(pieces.begin(), pieces.end(), [](const Piece& a, const Piece& b) { return a.begin < b.begin; });
  int64_t covered = begin;
  for (const Piece& p : pieces) {
    if (p.end <= begin || p.begin >= end) continue;
    MEMOE_CHECK(p.begin <= covered, path_, ": tensor ", name, " has no values for [", covered, ":", p.begin, "]");
    MEMOE_CHECK(p.begin >= covered || covered == begin, path_, ": pieces of ", name, " overlap at ", p.stored);
    const int64_t from = std::max(p.begin, begin), to = std::min(p.end, end);
    if (from == p.begin && to == p.end)
      read_f32_into(p.stored, out + (from - begin), to - from);
    else
      read_part(p.stored, from - p.begin, to - p.begin, out + (from - begin));
    covered = to;
  }
  MEMOE_CHECK(covered == end, path_, ": tensor ", name, " has no values for [", covered, ":", end, "]");
}

void write_safetensors_index(const std::string& dir, const std::string& stem, int n,
                             const std::map<std::string, std::string>& metadata) {
  json weight_map = json::object();
  uint64_t total = 0;
  for (int k = 1; k <= n; ++k) {
    const std::string file = shard_file_name(stem, k, n);
    const SafetensorsFile f = SafetensorsFile::open((fs::path(dir) / file).string());
    for (const std::string& name : f.names()) {
      MEMOE_CHECK(!weight_map.contains(name), dir, ": tensor ", quoted(name), " is in two shards");
      weight_map[name] = file;
      total += f.info(name).end - f.info(name).begin;
    }
  }
  json meta = json::object();
  for (const auto& [key, value] : metadata) meta[key] = value;
  meta["total_size"] = total;
  write_file_atomic((fs::path(dir) / index_file_name(stem)).string(),
                    json{{"metadata", meta}, {"weight_map", weight_map}}.dump(2) + "\n");
}

}  // namespace memoe
