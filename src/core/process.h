// Process-wide settings a program applies once at start-up.
#pragma once
#include <malloc.h>

namespace memoe {

// Keeps freed activation buffers in the heap (below 32 MiB, glibc's ceiling
// for this threshold) instead of returning them to the OS, so that each
// training step does not page-fault and zero the same memory again.
inline void keep_freed_memory_for_reuse() {
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
}

}  // namespace memoe
