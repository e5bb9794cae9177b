#include "io/atomic_file.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include "core/error.h"
#include "io/test_files.h"

namespace memoe {
namespace {

using io_testing::read_bytes;
using io_testing::write_bytes;

class AtomicFileTest : public io_testing::TempDirTest {};

TEST_F(AtomicFileTest, ReplacesTheTargetWholeAndLeavesNoTemporary) {
  const std::string path = file("out.bin");
  write_bytes(path, "old contents");
  write_file_atomic(path, std::string("new\0bytes", 9));
  EXPECT_EQ(read_bytes(path), std::string("new\0bytes", 9));
  EXPECT_EQ(regular_files(), 1);
}

TEST_F(AtomicFileTest, StreamsLargeAndSmallPieces) {
  const std::string path = file("big.bin");
  std::string expected;
  AtomicFileWriter writer(path);
  for (int piece = 0; piece < 40; ++piece) {
    // Mixes small writes with blocks over the internal buffer size.
    const std::string block(piece % 7 == 0 ? (3u << 20) + piece : 1000u + piece, static_cast<char>('a' + piece % 26));
    writer.write(block);
    expected += block;
  }
  EXPECT_FALSE(std::filesystem::exists(path));  // nothing visible before commit
  writer.commit();
  EXPECT_EQ(read_bytes(path), expected);
  EXPECT_THROW(writer.write("late", 4), Error);
}

TEST_F(AtomicFileTest, AbandonedWriteKeepsTheOldFile) {
  const std::string path = file("keep.bin");
  write_bytes(path, "precious");
  {
    AtomicFileWriter writer(path);
    writer.write(std::string(5 << 20, 'x'));
    EXPECT_TRUE(std::filesystem::exists(writer.temp_path()));
  }  // destroyed without commit, as when an exception unwinds
  EXPECT_EQ(read_bytes(path), "precious");
  EXPECT_EQ(regular_files(), 1);
}

TEST_F(AtomicFileTest, FailuresNameThePathAndReason) {
  const std::string missing_dir = file("nope/x.bin");
  try {
    write_file_atomic(missing_dir, "x");
    FAIL() << "write succeeded";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "cannot write " + missing_dir + ": No such file or directory");
  }
  // Renaming over a non-empty directory fails after the data was written:
  // the temporary must be cleaned up.
  std::filesystem::create_directories(file("full_dir/child"));
  try {
    write_file_atomic(file("full_dir"), "x");
    FAIL() << "write succeeded";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).find("cannot write " + file("full_dir") + ": "), 0u) << e.what();
  }
  EXPECT_EQ(regular_files(), 0);
  EXPECT_THROW(write_file_atomic("", "x"), Error);
}

TEST(UniqueTempSuffix, NamesHostProcessAndCall) {
  char host[256] = {};
  ASSERT_EQ(::gethostname(host, sizeof host - 1), 0);
  std::string h = host;
  for (char& c : h)
    if (c == '/' || c == '.') c = '_';
  const std::string a = unique_temp_suffix(), b = unique_temp_suffix();
  EXPECT_NE(a, b);
  EXPECT_EQ(a.rfind(h + "-" + std::to_string(::getpid()) + "-", 0), 0u) << a;
  EXPECT_EQ(a.find('/'), std::string::npos);
}

}  // namespace
}  // namespace memoe
