#include "io/safetensors_set.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <numeric>

#include "core/error.h"
#include "io/test_files.h"

namespace memoe {
namespace {

using io_testing::write_bytes;

class SafetensorsSetTest : public io_testing::TempDirTest {
 protected:
  std::string dir() const { return dir_.string(); }
  // Two shards: shard 1 holds "a" whole and x[0:3]; shard 2 holds x[3:10].
  void write_two_shards() {
    std::vector<float> a = {1, 2}, x(10);
    std::iota(x.begin(), x.end(), 0.0f);
    SafetensorsWriter one, two;
    one.add_f32("a", {2}, a.data());
    one.add_f32(piece_name("x", 0, 3, 10), {3}, x.data());
    two.add_f32(piece_name("x", 3, 10, 10), {7}, x.data() + 3);
    one.write(file(shard_file_name("opt", 1, 2)));
    two.write(file(shard_file_name("opt", 2, 2)));
    write_safetensors_index(dir(), "opt", 2, {{"optimizer_steps", "7"}});
  }
};

TEST_F(SafetensorsSetTest, ReadsRangesAcrossPiecesInAnyShard) {
  write_two_shards();
  const SafetensorsSet s = SafetensorsSet::open(dir(), "opt");
  EXPECT_TRUE(s.sharded());
  EXPECT_EQ(s.metadata().at("optimizer_steps"), "7");
  EXPECT_EQ(std::stoll(s.metadata().at("total_size")), 4 * 12);
  std::vector<float> out(10, -1.0f);
  s.read_range("x", 10, 0, 10, out.data());
  for (int i = 0; i < 10; ++i) EXPECT_EQ(out[size_t(i)], float(i));
  std::vector<float> middle(4);
  s.read_range("x", 10, 2, 6, middle.data());  // across the two shards
  EXPECT_EQ(middle, (std::vector<float>{2, 3, 4, 5}));
  std::vector<float> a(1);
  s.read_range("a", 2, 1, 2, a.data());  // part of a whole tensor
  EXPECT_EQ(a[0], 2.0f);
  EXPECT_THROW(s.read_range("x", 12, 0, 12, out.data()), Error);  // pieces cover 10, not 12
  EXPECT_THROW(s.read_range("y", 3, 0, 3, out.data()), Error);    // no such tensor
}

TEST_F(SafetensorsSetTest, OneFileWithoutAnIndex) {
  std::vector<float> a = {1, 2};
  SafetensorsWriter w;
  w.add_f32("a", {2}, a.data());
  w.write(file("model.safetensors"));
  const SafetensorsSet s = SafetensorsSet::open(dir(), "model");
  EXPECT_FALSE(s.sharded());
  EXPECT_EQ(s.names(), std::vector<std::string>{"a"});
  EXPECT_EQ(s.path(), file("model.safetensors"));
}

TEST_F(SafetensorsSetTest, AGapInThePiecesIsNamed) {
  std::vector<float> x(10, 1.0f);
  SafetensorsWriter w;
  w.add_f32(piece_name("x", 0, 3, 10), {3}, x.data());
  w.add_f32(piece_name("x", 5, 10, 10), {5}, x.data());
  w.write(file("opt.safetensors"));
  const SafetensorsSet s = SafetensorsSet::open(dir(), "opt");
  std::vector<float> out(10);
  try {
    s.read_range("x", 10, 0, 10, out.data());
    FAIL() << "a gap was read";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("has no values for [3:5]"), std::string::npos) << e.what();
  }
  s.read_range("x", 10, 5, 9, out.data());  // the stored part still reads
}

TEST_F(SafetensorsSetTest, OverlappingPiecesAreNamed) {
  std::vector<float> x(10, 1.0f);
  SafetensorsWriter w;
  w.add_f32(piece_name("x", 0, 6, 10), {6}, x.data());
  w.add_f32(piece_name("x", 4, 10, 10), {6}, x.data());
  w.write(file("opt.safetensors"));
  const SafetensorsSet s = SafetensorsSet::open(dir(), "opt");
  std::vector<float> out(10);
  try {
    s.read_range("x", 10, 0, 10, out.data());
    FAIL() << "overlapping pieces were read";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("overlap"), std::string::npos) << e.what();
  }
}

TEST_F(SafetensorsSetTest, ABadIndexIsOneLineNamingIt) {
  write_two_shards();
  const std::string index = file(index_file_name("opt"));
  for (const auto& [text, message] : std::vector<std::pair<std::string, std::string>>{
           {"{", "malformed index"},
           {"{\"metadata\": {}}", "no \"weight_map\""},
           {"{\"weight_map\": {\"a\": \"../x.safetensors\"}}", "is not a file name"},
           {"{\"weight_map\": {\"a\": \"missing.safetensors\"}}", "missing.safetensors"},
           {"{\"weight_map\": {\"zz\": \"" + shard_file_name("opt", 1, 2) + "\"}}", "does not hold \"zz\""}}) {
    write_bytes(index, text);
    try {
      SafetensorsSet::open(dir(), "opt");
      FAIL() << text;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(message), std::string::npos) << text << ": " << e.what();
    }
  }
}

}  // namespace
}  // namespace memoe
