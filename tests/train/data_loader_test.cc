// The data loader: random windows that are slices of the right split,
// reproducible from (seed, cursor), evaluation windows in order, and memory
// that does not grow with the corpus.
#include "train/data_loader.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/test_files.h"

namespace memoe {
namespace {

constexpr int64_t kVocab = 1000;
constexpr int64_t kEot = 0;

class DataLoaderTest : public io_testing::TempDirTest {
 protected:
  // Train ids run 1, 2, 3, ... (< 500) and val ids 500, 501, ... so a window
  // shows which split it came from and where. Documents of 7 tokens plus eot;
  // shards of 64 tokens so windows cross shard boundaries.
  void write_data(int64_t train_docs = 40, int64_t val_docs = 10) {
    TokenShardWriter writer(dir_.string(), kVocab, kEot, 64);
    auto add = [&](const std::string& split, int64_t docs, int32_t base, int32_t span) {
      int32_t next = 0;
      for (int64_t d = 0; d < docs; ++d) {
        std::vector<int32_t> ids;
        for (int i = 0; i < 7; ++i) ids.push_back(base + (next++ % span));
        writer.add_document(split, ids);
        stream_[split].insert(stream_[split].end(), ids.begin(), ids.end());
        stream_[split].push_back(kEot);
      }
    };
    add("train", train_docs, 1, 499);
    add("val", val_docs, 500, 499);
    writer.finish();
  }
  std::vector<int64_t> batch(DataLoader& loader, int64_t rows) {
    std::vector<int64_t> ids(size_t(rows * (loader.seq_len() + 1)));
    loader.next_batch(rows, ids.data());
    return ids;
  }
  std::map<std::string, std::vector<int64_t>> stream_;
};

TEST_F(DataLoaderTest, SameSeedSameBatchesDifferentSeedDifferent) {
  write_data();
  DataLoader a(dir_.string(), "train", 16, 7), b(dir_.string(), "train", 16, 7), c(dir_.string(), "train", 16, 8);
  const auto first = batch(a, 4);
  EXPECT_EQ(first, batch(b, 4));
  EXPECT_NE(first, batch(c, 4));
  EXPECT_NE(first, batch(a, 4));  // the stream moves on
  EXPECT_EQ(a.cursor(), 8u);
}

TEST_F(DataLoaderTest, WindowsAreSlicesOfTheRequestedSplit) {
  write_data();
  for (const std::string split : {"train", "val"}) {
    DataLoader loader(dir_.string(), split, 10, 3);
    const auto& stream = stream_[split];
    ASSERT_EQ(loader.total_tokens(), int64_t(stream.size()));
    const auto ids = batch(loader, 50);
    for (int64_t w = 0; w < 50; ++w) {
      const int64_t start = loader.window_start(uint64_t(w));
      ASSERT_GE(start, 0);
      ASSERT_LE(start + 11, int64_t(stream.size()));
      const std::vector<int64_t> want(stream.begin() + start, stream.begin() + start + 11);
      const std::vector<int64_t> got(ids.begin() + w * 11, ids.begin() + (w + 1) * 11);
      EXPECT_EQ(got, want) << split << " window " << w;
      for (int64_t id : got)
        EXPECT_TRUE(id == kEot || (split == "train" ? id < 500 : id >= 500)) << split << " got " << id;
    }
  }
}

TEST_F(DataLoaderTest, CursorRestoreReproducesBatchesWhateverTheBatchSize) {
  write_data();
  DataLoader loader(dir_.string(), "train", 8, 11);
  batch(loader, 3);
  batch(loader, 5);
  const uint64_t saved = loader.cursor();
  EXPECT_EQ(saved, 8u);
  const auto next1 = batch(loader, 4), next2 = batch(loader, 4);

  DataLoader resumed(dir_.string(), "train", 8, 11);
  resumed.set_cursor(saved);
  EXPECT_EQ(batch(resumed, 4), next1);
  EXPECT_EQ(batch(resumed, 4), next2);

  DataLoader regrouped(dir_.string(), "train", 8, 11);
  regrouped.set_cursor(saved);
  std::vector<int64_t> joined = next1;
  joined.insert(joined.end(), next2.begin(), next2.end());
  EXPECT_EQ(batch(regrouped, 8), joined);
}

TEST_F(DataLoaderTest, StartsAreUniformOverEveryWindowThatFits) {
  write_data(2, 1);  // train: 16 tokens, so 16 - 4 = 12 windows of 5 tokens
  DataLoader loader(dir_.string(), "train", 4, 5);
  std::vector<int> counts(12, 0);
  const int draws = 12000;
  for (int i = 0; i < draws; ++i) {
    const int64_t start = loader.window_start(uint64_t(i));
    ASSERT_GE(start, 0);
    ASSERT_LT(start, 12);
    ++counts[size_t(start)];
  }
  // 1000 expected each; 5 standard deviations is about 150.
  for (int s = 0; s < 12; ++s) EXPECT_NEAR(counts[size_t(s)], 1000, 150) << "start " << s;
}

TEST_F(DataLoaderTest, EvalWindowsCoverTheSplitInOrder) {
  write_data(5, 1);  // 40 train tokens
  DataLoader loader(dir_.string(), "train", 6, 0);
  const auto& stream = stream_["train"];
  EXPECT_EQ(loader.eval_window_count(), (40 - 1) / 6);
  std::vector<int64_t> ids(size_t(2 * 7));
  loader.eval_batch(1, 2, ids.data());
  EXPECT_EQ(std::vector<int64_t>(ids.begin(), ids.begin() + 7),
            std::vector<int64_t>(stream.begin() + 6, stream.begin() + 13));
  EXPECT_EQ(std::vector<int64_t>(ids.begin() + 7, ids.end()),
            std::vector<int64_t>(stream.begin() + 12, stream.begin() + 19));
  EXPECT_THROW(loader.eval_batch(5, 2, ids.data()), Error);
  EXPECT_NO_THROW(loader.eval_batch(4, 2, ids.data()));
  EXPECT_EQ(loader.cursor(), 0u);  // evaluation leaves the training stream alone
}

TEST_F(DataLoaderTest, SplitShorterThanAWindowIsAnError) {
  write_data(2, 1);  // val: 8 tokens
  EXPECT_NO_THROW(DataLoader(dir_.string(), "val", 7, 0));
  try {
    DataLoader(dir_.string(), "val", 8, 0);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("split 'val' has 8 tokens, fewer than seq_len + 1 = 9"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(DataLoader(dir_.string(), "train", 0, 0), Error);
  DataLoader loader(dir_.string(), "train", 4, 0);
  std::vector<int64_t> ids(5);
  EXPECT_THROW(loader.next_batch(0, ids.data()), Error);
}

TEST_F(DataLoaderTest, CorruptShardOrMissingSplitIsAnError) {
  write_data();
  EXPECT_THROW(DataLoader(dir_.string(), "test", 4, 0), Error);
  const std::string shard = file("train_00001.bin");
  io_testing::write_bytes(shard, io_testing::read_bytes(shard).substr(4));
  EXPECT_THROW(DataLoader(dir_.string(), "train", 4, 0), Error);
}

// Resident memory in KiB from /proc/self/status: anonymous (heap, copies)
// and file-backed (mapped shard pages).
int64_t rss_kib(const std::string& field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(field + ":", 0) == 0) return std::stoll(line.substr(field.size() + 1));
  ADD_FAILURE() << "no " << field << " in /proc/self/status";
  return 0;
}

// A 16 MiB split (32 MiB as int64) must not show up in resident memory: not
// as a copy (anonymous), and not as mapped pages left behind by the id scan.
TEST_F(DataLoaderTest, ResidentMemoryDoesNotGrowWithTheCorpus) {
  constexpr int64_t kTokens = int64_t(4) << 20;
  {
    TokenShardWriter writer(dir_.string(), kVocab, kEot, int64_t(1) << 20);
    std::vector<int32_t> doc(4095);
    for (size_t i = 0; i < doc.size(); ++i) doc[i] = int32_t(1 + i % 998);
    for (int64_t t = 0; t < kTokens; t += 4096) writer.add_document("train", doc);
    writer.add_document("val", doc);
    writer.finish();
  }
  constexpr int64_t kSeq = 1024, kBatch = 8;
  std::vector<int64_t> ids(size_t(kBatch * (kSeq + 1)));
  const int64_t anon0 = rss_kib("RssAnon"), file0 = rss_kib("RssFile") + rss_kib("RssShmem");
  DataLoader loader(dir_.string(), "train", kSeq, 1);
  ASSERT_EQ(loader.total_tokens(), kTokens);
  const int64_t file_after_scan = rss_kib("RssFile") + rss_kib("RssShmem");
  for (int i = 0; i < 20; ++i) loader.next_batch(kBatch, ids.data());
  const int64_t anon1 = rss_kib("RssAnon");
  EXPECT_LT(anon1 - anon0, 2048) << "anonymous memory grew by " << anon1 - anon0 << " KiB";
  EXPECT_LT(file_after_scan - file0, 4096) << "the id scan left " << file_after_scan - file0 << " KiB mapped";
}

}  // namespace
}  // namespace memoe
