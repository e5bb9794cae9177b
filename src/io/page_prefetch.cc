#include "io/page_prefetch.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>

#include "core/error.h"

namespace memoe {

namespace {
// Threads of the reader: each takes one step's batch of rows at a time;
// they sleep on the disk, not on a core.
constexpr int kReaders = 2;

uintptr_t page_size() {
  static const uintptr_t size = uintptr_t(::sysconf(_SC_PAGESIZE));
  return size;
}

// The page-aligned span that covers a range.
std::pair<uintptr_t, size_t> page_span(MemoryRange r) {
  const uintptr_t page = page_size(), begin = reinterpret_cast<uintptr_t>(r.address) & ~(page - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(r.address) + r.bytes + page - 1) & ~(page - 1);
  return {begin, size_t(end - begin)};
}
}  // namespace

const char* prefetch_method_name(PrefetchMethod m) {
  switch (m) {
    case PrefetchMethod::madvise: return "madvise";
    case PrefetchMethod::reader: return "reader";
    default: return "off";
  }
}

PrefetchMethod parse_prefetch_method(const std::string& name) {
  if (name == "off") return PrefetchMethod::off;
  if (name == "madvise") return PrefetchMethod::madvise;
  if (name == "reader") return PrefetchMethod::reader;
  fail("unknown prefetch method '", name, "' (expected off, madvise or reader)");
}

void advise_random_access(MemoryRange range) {
  if (range.bytes == 0) return;
  const auto [begin, bytes] = page_span(range);
  // Advice only: where the kernel declines, reads are merely slower.
  ::madvise(reinterpret_cast<void*>(begin), bytes, MADV_RANDOM);
}

void release_pages(MemoryRange range) {
  const uintptr_t page = page_size(), begin = (reinterpret_cast<uintptr_t>(range.address) + page - 1) & ~(page - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(range.address) + range.bytes) & ~(page - 1);
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), size_t(end - begin), MADV_DONTNEED);
}

PagePrefetcher::PagePrefetcher(PrefetchMethod method) : method_(method) {
  if (method_ == PrefetchMethod::reader)
    for (int i = 0; i < kReaders; ++i) readers_.emplace_back([this] { read_pages(); });
}

PagePrefetcher::~PagePrefetcher() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    batches_.clear();
  }
  wake_.notify_all();
  for (std::thread& t : readers_) t.join();
}

namespace {
void advise_will_need(const std::vector<MemoryRange>& ranges) {
  for (const MemoryRange& r : ranges) {
    if (r.bytes == 0) continue;
    const auto [begin, bytes] = page_span(r);
    ::madvise(reinterpret_cast<void*>(begin), bytes, MADV_WILLNEED);
  }
}
}  // namespace

void PagePrefetcher::prefetch(const std::vector<MemoryRange>& ranges) {
  if (method_ == PrefetchMethod::madvise) {
    advise_will_need(ranges);  // the kernel queues every read and returns
  } else if (method_ == PrefetchMethod::reader) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      batches_.push_back(ranges);
    }
    wake_.notify_one();
  }
}

size_t PagePrefetcher::pending() {
  std::lock_guard<std::mutex> lock(mutex_);
  return batches_.size();
}

void PagePrefetcher::read_pages() {
  for (;;) {
    std::vector<MemoryRange> batch;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || !batches_.empty(); });
      if (stopping_) return;
      batch = std::move(batches_.front());
      batches_.pop_front();
    }
    // All of the batch's reads queued at once, then each page mapped in
    // (waiting for it here, not on a compute thread).
    advise_will_need(batch);
    for (const MemoryRange& r : batch) {
      if (r.bytes == 0) continue;
      const auto [begin, bytes] = page_span(r);
      for (uintptr_t p = begin; p < begin + bytes; p += page_size()) (void)*reinterpret_cast<const volatile char*>(p);
    }
  }
}

}  // namespace memoe
