// Process-wide settings a program applies once at start-up.
#pragma once
#include <malloc.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

namespace memoe {

// Keeps freed activation buffers in the heap (below 32 MiB, glibc's ceiling
// for this threshold) instead of returning them to the OS, so that each
// training step does not page-fault and zero the same memory again.
inline void keep_freed_memory_for_reuse() {
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
}

// Sets each variable of `defaults` that the user has not set and, if it set
// any, starts the process over once (argv as main got it) so that the
// libraries that read them when they load (the OpenMP runtime, OpenBLAS) see
// them. If that fails, it carries on as it is.
inline void restart_with_defaults(char** argv, const std::vector<std::pair<std::string, std::string>>& defaults) {
  bool changed = false;
  for (const auto& [name, value] : defaults)
    if (!std::getenv(name.c_str()) && setenv(name.c_str(), value.c_str(), 1) == 0) changed = true;
  if (changed) execv("/proc/self/exe", argv);
}

}  // namespace memoe
