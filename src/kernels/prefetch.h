// Read-ahead into the caches for loops whose addresses are known before
// they are read: an Engram table's rows (spread at random over a table far
// larger than the caches) and their optimizer moments. Hints only: results
// never change, only when the memory arrives.
#pragma once
#include <cstddef>
#include <cstdint>

namespace memoe {

inline constexpr size_t kCacheLine = 64;

// Asks for each 64-byte line of [p, p + bytes), to be read (or written).
inline void prefetch_bytes(const void* p, size_t bytes, bool for_write = false) {
  const uintptr_t first = reinterpret_cast<uintptr_t>(p) & ~uintptr_t(kCacheLine - 1);
  const uintptr_t end = reinterpret_cast<uintptr_t>(p) + bytes;
  for (uintptr_t at = first; at < end; at += kCacheLine) {
    if (for_write) {
      __builtin_prefetch(reinterpret_cast<const void*>(at), 1, 3);
    } else {
      __builtin_prefetch(reinterpret_cast<const void*>(at), 0, 3);
    }
  }
}

// How many rows ahead a gather over random rows asks for its next ones: about
// a DRAM latency's worth of row copies, so that many reads overlap.
inline constexpr int64_t kGatherAhead = 16;

}  // namespace memoe
