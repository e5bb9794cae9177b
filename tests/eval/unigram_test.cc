// The unigram baseline: its value by hand, and that a shard id outside the
// vocabulary is refused with the file and position rather than indexing past
// the count table.
#include "eval/unigram.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "core/error.h"
#include "io/test_files.h"
#include "io/token_shards.h"

namespace memoe {
namespace {

using io_testing::le_bytes;
using io_testing::read_bytes;
using io_testing::write_bytes;

constexpr int64_t kVocab = 4;

class Unigram : public io_testing::TempDirTest {
 protected:
  // train: 1 1 2 0 | 3 0 (shards of 4 tokens); val: 1 3 0.
  void write_sample() {
    TokenShardWriter writer(dir_.string(), kVocab, /*eot_id=*/0, /*max_shard_tokens=*/4);
    writer.add_document("train", {1, 1, 2});
    writer.add_document("train", {3});
    writer.add_document("val", {1, 3});
    writer.finish();
  }
  // Overwrites token `index` of shard `name` with `id`.
  void poke(const std::string& name, size_t index, uint64_t id) {
    std::string bytes = read_bytes(file(name));
    bytes.replace(4 * index, 4, le_bytes(id, 4));
    write_bytes(file(name), bytes);
  }
  std::string error() {
    try {
      unigram_baseline(dir_.string(), 0);
    } catch (const Error& e) {
      return e.what();
    }
    ADD_FAILURE() << "no error";
    return "";
  }
};

TEST_F(Unigram, MatchesHandCount) {
  write_sample();
  // Add-one counts over train (6 tokens): id 0: 1+2, 1: 1+2, 2: 1+1, 3: 1+1; total 4 + 6 = 10.
  const double expect = -(std::log(3.0 / 10) + std::log(2.0 / 10) + std::log(3.0 / 10)) / 3;
  const UnigramResult r = unigram_baseline(dir_.string(), 0);
  EXPECT_EQ(r.tokens, 3);
  EXPECT_NEAR(r.loss, expect, 1e-12);
  EXPECT_NEAR(r.perplexity, std::exp(expect), 1e-12);
  const UnigramResult two = unigram_baseline(dir_.string(), 2);  // val tokens 1 3 only
  EXPECT_EQ(two.tokens, 2);
  EXPECT_NEAR(two.loss, -(std::log(3.0 / 10) + std::log(2.0 / 10)) / 2, 1e-12);
}

TEST_F(Unigram, TrainIdOutsideVocabularyIsRefused) {
  write_sample();
  poke("train_00001.bin", 1, kVocab);  // stream position 5
  const std::string e = error();
  EXPECT_NE(e.find("train_00001.bin: token 1 has id 4 >= vocab_size 4"), std::string::npos) << e;
  poke("train_00001.bin", 1, 0xFFFFFFFFu);
  EXPECT_NE(error().find("train_00001.bin: token 1 has id 4294967295"), std::string::npos);
}

TEST_F(Unigram, ValIdOutsideVocabularyIsRefused) {
  write_sample();
  poke("val_00000.bin", 2, 1000);
  const std::string e = error();
  EXPECT_NE(e.find("val_00000.bin: token 2 has id 1000 >= vocab_size 4"), std::string::npos) << e;
  // Beyond max_tokens the bad id is never read.
  EXPECT_NO_THROW(unigram_baseline(dir_.string(), 2));
}

}  // namespace
}  // namespace memoe
