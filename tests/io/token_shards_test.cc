// Token data directories: what the writer produces, that the reader gives it
// back as one stream per split, and that every kind of damage is refused.
#include "io/token_shards.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <vector>

#include "core/error.h"
#include "io/test_files.h"

namespace memoe {
namespace {

using io_testing::le_bytes;
using io_testing::read_bytes;
using io_testing::write_bytes;
namespace fs = std::filesystem;

constexpr int64_t kVocab = 100;
constexpr int64_t kEot = 0;

class TokenShards : public io_testing::TempDirTest {
 protected:
  // Writes documents {1..5}, {6, 7}, {8} to train and {9, 10} to val with
  // shards of 4 tokens; returns the train stream (with eot) it should hold.
  std::vector<int64_t> write_sample(int64_t shard_tokens = 4) {
    TokenShardWriter writer(dir_.string(), kVocab, kEot, shard_tokens);
    writer.add_source("a.txt");
    writer.add_document("train", {1, 2, 3, 4, 5});
    writer.add_document("val", {9, 10});
    writer.add_document("train", {6, 7});
    writer.add_document("train", {8});
    writer.finish();
    return {1, 2, 3, 4, 5, 0, 6, 7, 0, 8, 0};
  }
  std::vector<int64_t> read_all(const std::string& split) {
    TokenSplitReader reader(dir_.string(), split);
    std::vector<int64_t> out(size_t(reader.size()));
    reader.read(0, reader.size(), out.data());
    return out;
  }
  nlohmann::json meta_json() { return nlohmann::json::parse(read_bytes(file("meta.json"))); }
  void set_meta(const nlohmann::json& j) { write_bytes(file("meta.json"), j.dump()); }
  // The reader's error for the current directory; fails the test if none.
  std::string open_error(const std::string& split = "train") {
    try {
      TokenSplitReader reader(dir_.string(), split);
    } catch (const Error& e) {
      return e.what();
    }
    ADD_FAILURE() << "no error";
    return "";
  }
};

TEST_F(TokenShards, WriterLaysOutShardsAndMeta) {
  write_sample();
  const TokenDataMeta meta = read_token_meta(dir_.string());
  EXPECT_EQ(meta.vocab_size, kVocab);
  EXPECT_EQ(meta.eot_id, kEot);
  EXPECT_EQ(meta.sources, std::vector<std::string>{"a.txt"});
  const TokenSplitMeta& train = meta.splits.at("train");
  EXPECT_EQ(train.tokens, 11);
  EXPECT_EQ(train.documents, 3);
  EXPECT_EQ(train.shards, (std::vector<std::string>{"train_00000.bin", "train_00001.bin", "train_00002.bin"}));
  EXPECT_EQ(train.shard_tokens, (std::vector<int64_t>{4, 4, 3}));
  EXPECT_EQ(meta.splits.at("val").tokens, 3);
  EXPECT_EQ(meta.splits.at("val").documents, 1);
  // Raw little-endian uint32, documents each followed by eot.
  EXPECT_EQ(read_bytes(file("val_00000.bin")), le_bytes(9, 4) + le_bytes(10, 4) + le_bytes(0, 4));
  EXPECT_EQ(meta_json()["format"], "memoe-tokens-v1");
  EXPECT_EQ(meta_json()["dtype"], "uint32");
  EXPECT_EQ(regular_files(), 5);  // 3 + 1 shards and meta.json: no temporaries left
}

TEST_F(TokenShards, ExactMultipleOfShardSizeLeavesNoEmptyShard) {
  TokenShardWriter writer(dir_.string(), kVocab, kEot, 3);
  writer.add_document("train", {1, 2});
  writer.add_document("train", {3, 4});
  const TokenDataMeta meta = writer.finish();
  EXPECT_EQ(meta.splits.at("train").shard_tokens, (std::vector<int64_t>{3, 3}));
  EXPECT_FALSE(fs::exists(file("train_00002.bin")));
}

TEST_F(TokenShards, ReaderGivesEachSplitAsOneStream) {
  const std::vector<int64_t> train = write_sample();
  EXPECT_EQ(read_all("train"), train);
  EXPECT_EQ(read_all("val"), (std::vector<int64_t>{9, 10, 0}));
  TokenSplitReader reader(dir_.string(), "train");
  std::vector<int64_t> window(6);
  reader.read(3, 6, window.data());  // spans shards 0, 1 and 2
  EXPECT_EQ(window, (std::vector<int64_t>{4, 5, 0, 6, 7, 0}));
  EXPECT_EQ(reader.at(9), 8u);
  EXPECT_THROW(reader.read(8, 4, window.data()), Error);
  EXPECT_THROW(reader.at(11), Error);
}

TEST_F(TokenShards, MetaIsWrittenLastAndUnfinishedWritersLeaveNoTemporaries) {
  {
    TokenShardWriter writer(dir_.string(), kVocab, kEot, 4);
    writer.add_document("train", {1, 2, 3, 4, 5});  // one shard complete, one open
    EXPECT_FALSE(fs::exists(file("meta.json")));
    EXPECT_NE(open_error().find("meta.json"), std::string::npos);
  }
  EXPECT_EQ(regular_files(), 1);  // the completed shard; the open one is gone
  EXPECT_TRUE(fs::exists(file("train_00000.bin")));
}

TEST_F(TokenShards, WriterRejectsBadInput) {
  EXPECT_THROW(TokenShardWriter(dir_.string(), 0, 0), Error);
  EXPECT_THROW(TokenShardWriter(dir_.string(), kVocab, kVocab), Error);
  EXPECT_THROW(TokenShardWriter(dir_.string(), kVocab, kEot, 0), Error);
  TokenShardWriter writer(dir_.string(), kVocab, kEot);
  EXPECT_THROW(writer.add_document("train", {1, int32_t(kVocab)}), Error);
  EXPECT_THROW(writer.add_document("train", {-1}), Error);
  EXPECT_THROW(writer.add_document("../x", {1}), Error);
  writer.add_document("train", {1});
  writer.finish();
  EXPECT_THROW(writer.finish(), Error);
  // A finished directory is not written over.
  EXPECT_THROW(TokenShardWriter(dir_.string(), kVocab, kEot), Error);
}

TEST_F(TokenShards, ShardSizeNotMultipleOfFour) {
  write_sample();
  write_bytes(file("train_00001.bin"), read_bytes(file("train_00001.bin")) + "x");
  const std::string e = open_error();
  EXPECT_NE(e.find("train_00001.bin"), std::string::npos) << e;
  EXPECT_NE(e.find("multiple of 4"), std::string::npos) << e;
}

TEST_F(TokenShards, TruncatedShard) {
  write_sample();
  write_bytes(file("train_00002.bin"), read_bytes(file("train_00002.bin")).substr(0, 8));
  const std::string e = open_error();
  EXPECT_NE(e.find("train_00002.bin: holds 2 tokens but meta.json says 3"), std::string::npos) << e;
}

TEST_F(TokenShards, IdOutsideVocabulary) {
  write_sample();
  std::string bytes = read_bytes(file("train_00001.bin"));
  bytes.replace(4, 4, le_bytes(kVocab, 4));
  write_bytes(file("train_00001.bin"), bytes);
  const std::string e = open_error();
  EXPECT_NE(e.find("train_00001.bin: token 1 has id 100 >= vocab_size 100"), std::string::npos) << e;
  // Without the scan, reading the bad token still fails rather than passing it on.
  TokenSplitReader unscanned(dir_.string(), "train", /*scan_ids=*/false);
  std::vector<int64_t> out(4);
  EXPECT_NO_THROW(unscanned.read(0, 4, out.data()));
  EXPECT_THROW(unscanned.read(4, 4, out.data()), Error);
}

// at() checks each id as read() does: an unscanned reader (the unigram
// baseline's) must not hand out an id that would index past a vocab table.
TEST_F(TokenShards, AtRefusesIdOutsideVocabularyWithoutScan) {
  write_sample();
  std::string bytes = read_bytes(file("train_00002.bin"));
  bytes.replace(8, 4, le_bytes(0xFFFFFFFFu, 4));  // stream position 10
  write_bytes(file("train_00002.bin"), bytes);
  TokenSplitReader unscanned(dir_.string(), "train", /*scan_ids=*/false);
  EXPECT_EQ(unscanned.at(9), 8u);
  try {
    unscanned.at(10);
    ADD_FAILURE() << "at() returned an id >= vocab_size";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("train_00002.bin: token 2 has id 4294967295 >= vocab_size 100"),
              std::string::npos)
        << e.what();
  }
  EXPECT_NE(open_error().find("train_00002.bin: token 2 has id 4294967295"), std::string::npos);
}

TEST_F(TokenShards, MissingShard) {
  write_sample();
  fs::remove(file("train_00000.bin"));
  const std::string e = open_error();
  EXPECT_NE(e.find("cannot open"), std::string::npos) << e;
  EXPECT_NE(e.find("train_00000.bin"), std::string::npos) << e;
  EXPECT_NO_THROW(TokenSplitReader(dir_.string(), "val"));  // the other split is intact
}

TEST_F(TokenShards, MissingSplitNamesTheOnesThatExist) {
  write_sample();
  const std::string e = open_error("test");
  EXPECT_NE(e.find("no split 'test' (have: train, val)"), std::string::npos) << e;
}

TEST_F(TokenShards, MissingOrUnparseableMeta) {
  EXPECT_NE(open_error().find("meta.json"), std::string::npos);
  write_bytes(file("meta.json"), "{\"format\": ");
  const std::string e = open_error();
  EXPECT_NE(e.find("meta.json: not valid JSON"), std::string::npos) << e;
}

// Each damaged field of meta.json gives an error that names it.
TEST_F(TokenShards, BadMetaFields) {
  write_sample();
  const nlohmann::json good = meta_json();
  struct Case {
    const char* what;
    std::function<void(nlohmann::json&)> damage;
    const char* expect;
  };
  const std::vector<Case> cases = {
      {"format", [](auto& j) { j["format"] = "memoe-tokens-v0"; }, "'format'"},
      {"dtype", [](auto& j) { j["dtype"] = "uint16"; }, "'dtype'"},
      {"vocab", [](auto& j) { j.erase("vocab_size"); }, "missing key 'vocab_size'"},
      {"vocab type", [](auto& j) { j["vocab_size"] = "100"; }, "'vocab_size' must be an integer"},
      {"eot", [](auto& j) { j["eot_id"] = 100; }, "eot_id 100 >= vocab_size 100"},
      {"negative", [](auto& j) { j["splits"]["train"]["documents"] = -1; }, "must not be negative"},
      {"sum", [](auto& j) { j["splits"]["train"]["tokens"] = 12; }, "shard_tokens sum to 11 but 'tokens' is 12"},
      {"lengths", [](auto& j) { j["splits"]["train"]["shard_tokens"].erase(0); }, "3 shards but 2 shard_tokens"},
      {"escape", [](auto& j) { j["splits"]["train"]["shards"][0] = "../train_00000.bin"; }, "plain file name"},
      {"shared", [](auto& j) { j["splits"]["val"]["shards"][0] = "train_00000.bin"; }, "listed twice"},
      {"splits", [](auto& j) { j["splits"] = nlohmann::json::array(); }, "'splits' must be an object"},
  };
  for (const auto& c : cases) {
    nlohmann::json j = good;
    c.damage(j);
    set_meta(j);
    const std::string e = open_error();
    EXPECT_NE(e.find(c.expect), std::string::npos) << c.what << ": " << e;
    EXPECT_NE(e.find("meta.json"), std::string::npos) << c.what << ": " << e;
  }
  set_meta(good);
  EXPECT_NO_THROW(TokenSplitReader(dir_.string(), "train"));
}

}  // namespace
}  // namespace memoe
