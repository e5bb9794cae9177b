// Reading ahead in memory-mapped files: at inference the Engram tables stay
// in the mapped checkpoint, and the rows a step will read are known from the
// token ids before the layer runs (Engram paper, §"system efficiency"), so
// their pages can be on their way while earlier layers compute.
//
// Two ways to ask, measured against each other in bench/decode_bench:
// - madvise: madvise(MADV_WILLNEED) on each row's pages, which queues the
//   reads in the kernel and returns at once;
// - reader: the call only queues the ranges; a reader thread gives the same
//   advice and then touches one byte of each page, so that the system
//   calls, the page faults and any wait for the disk are its, not the
//   compute threads'.
#pragma once
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace memoe {

enum class PrefetchMethod { off, madvise, reader };
const char* prefetch_method_name(PrefetchMethod m);          // "off", "madvise", "reader"
PrefetchMethod parse_prefetch_method(const std::string& name);  // one line for anything else

struct MemoryRange {
  const void* address;
  size_t bytes;
};

// Tells the kernel that a file mapping's [address, address + bytes) is read
// at random: a fault reads its own page, not the 128 KiB around it.
void advise_random_access(MemoryRange range);

// Drops a file mapping's pages in [address, address + bytes) from this
// process (whole pages inside the range only); the page cache keeps them,
// and touching them again maps them back.
void release_pages(MemoryRange range);

class PagePrefetcher {
 public:
  explicit PagePrefetcher(PrefetchMethod method);
  ~PagePrefetcher();
  PagePrefetcher(const PagePrefetcher&) = delete;
  PagePrefetcher& operator=(const PagePrefetcher&) = delete;

  PrefetchMethod method() const { return method_; }
  // Starts bringing in the pages that hold the ranges and returns before
  // they arrive. The memory must stay mapped until it is read.
  void prefetch(const std::vector<MemoryRange>& ranges);
  // Batches the readers have not taken yet (0 for the other methods).
  size_t pending();

 private:
  void read_pages();

  PrefetchMethod method_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::vector<MemoryRange>> batches_;
  bool stopping_ = false;
  std::vector<std::thread> readers_;
};

}  // namespace memoe
