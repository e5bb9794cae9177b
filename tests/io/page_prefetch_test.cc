// Read-ahead of mapped pages (io/page_prefetch.h): after the file's pages
// are evicted from the page cache, a prefetch brings back exactly the pages
// it was asked for, by either method; release_pages gives a process's
// mapped pages back.
#include "io/page_prefetch.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "io/test_files.h"

namespace memoe {
namespace {

using io_testing::TempDirTest;

constexpr size_t kPages = 64;

class PagePrefetch : public TempDirTest {
 protected:
  void SetUp() override {
    TempDirTest::SetUp();
    page_ = size_t(sysconf(_SC_PAGESIZE));
    path_ = file("pages.bin");
    {
      std::ofstream out(path_, std::ios::binary);
      const std::string block(page_, 'x');
      for (size_t i = 0; i < kPages; ++i) out << block;
    }
    fd_ = ::open(path_.c_str(), O_RDONLY);
    ASSERT_GE(fd_, 0);
    ::fdatasync(fd_);
    map_ = ::mmap(nullptr, kPages * page_, PROT_READ, MAP_PRIVATE, fd_, 0);
    ASSERT_NE(map_, MAP_FAILED);
    advise_random_access({map_, kPages * page_});
  }
  void TearDown() override {
    ::munmap(map_, kPages * page_);
    ::close(fd_);
    TempDirTest::TearDown();
  }
  // Evicts the file from the page cache; false where the system keeps it.
  bool evict() {
    ::posix_fadvise(fd_, 0, 0, POSIX_FADV_DONTNEED);
    return resident_count() == 0;
  }
  std::vector<unsigned char> residency() {
    std::vector<unsigned char> v(kPages);
    ::mincore(map_, kPages * page_, v.data());
    return v;
  }
  size_t resident_count() {
    size_t n = 0;
    for (unsigned char c : residency()) n += c & 1;
    return n;
  }
  // Waits (up to 5 s) for the pages to arrive.
  bool wait_for(const std::vector<size_t>& pages) {
    for (int i = 0; i < 500; ++i) {
      const auto r = residency();
      bool all = true;
      for (size_t p : pages) all = all && (r[p] & 1);
      if (all) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }
  const char* at(size_t page, size_t offset = 0) const { return static_cast<const char*>(map_) + page * page_ + offset; }

  size_t page_ = 4096;
  std::string path_;
  int fd_ = -1;
  void* map_ = nullptr;
};

TEST_F(PagePrefetch, BothMethodsBringInTheAskedPagesOnly) {
  for (PrefetchMethod method : {PrefetchMethod::madvise, PrefetchMethod::reader}) {
    if (!evict()) GTEST_SKIP() << "this filesystem keeps the file in memory; nothing to measure";
    PagePrefetcher prefetcher(method);
    // A row inside page 3 and a row straddling pages 40 and 41.
    prefetcher.prefetch({{at(3, 100), 64}, {at(40, page_ - 32), 64}});
    EXPECT_TRUE(wait_for({3, 40, 41})) << prefetch_method_name(method);
    const auto r = residency();
    EXPECT_FALSE(r[20] & 1) << prefetch_method_name(method) << " read a page nobody asked for";
    EXPECT_FALSE(r[63] & 1) << prefetch_method_name(method);
  }
}

TEST_F(PagePrefetch, OffReadsNothing) {
  if (!evict()) GTEST_SKIP() << "this filesystem keeps the file in memory";
  PagePrefetcher prefetcher(PrefetchMethod::off);
  prefetcher.prefetch({{at(5), 64}});
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(resident_count(), 0u);
}

TEST_F(PagePrefetch, AReaderStopsCleanlyWithPagesStillQueued) {
  auto prefetcher = std::make_unique<PagePrefetcher>(PrefetchMethod::reader);
  std::vector<MemoryRange> ranges;
  for (size_t p = 0; p < kPages; ++p) ranges.push_back({at(p), 8});
  prefetcher->prefetch(ranges);
  prefetcher.reset();  // joins, drops the queue
  SUCCEED();
}

TEST_F(PagePrefetch, ReleasePagesDropsWholePagesFromTheProcess) {
  auto statm_resident = [] {
    std::ifstream statm("/proc/self/statm");
    long size = 0, resident = 0;
    statm >> size >> resident;
    return resident;
  };
  volatile char sum = 0;
  for (size_t p = 0; p < kPages; ++p) sum = char(sum + *at(p));
  const long touched = statm_resident();
  release_pages({map_, kPages * page_});
  const long released = statm_resident();
  // Other allocations move RSS by a page or two; without the release it does not fall at all.
  EXPECT_GE(touched - released, long(kPages) - 8);
  EXPECT_EQ(*at(7), 'x');  // mapped back on the next touch
}

TEST(PrefetchMethodNames, ParseAndRefuse) {
  EXPECT_EQ(parse_prefetch_method("madvise"), PrefetchMethod::madvise);
  EXPECT_EQ(parse_prefetch_method("reader"), PrefetchMethod::reader);
  EXPECT_EQ(parse_prefetch_method("off"), PrefetchMethod::off);
  EXPECT_THROW(parse_prefetch_method("sometimes"), Error);
}

}  // namespace
}  // namespace memoe
