// Process-wide settings a program applies once at start-up.
#pragma once
#include <malloc.h>
#include <unistd.h>

#include <cstdlib>

namespace memoe {

// Keeps freed activation buffers in the heap (below 32 MiB, glibc's ceiling
// for this threshold) instead of returning them to the OS, so that each
// training step does not page-fault and zero the same memory again.
inline void keep_freed_memory_for_reuse() {
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
}

// Idle OpenMP threads sleep unless the user says otherwise: spinning ones
// (libgomp's default) took decode on 2 cores from 340 to 22 tokens/s, and
// slow training wherever another process shares the cores. The runtime
// reads the setting when it loads, so the process starts over once with it
// (argv as main got it); if that fails, it carries on as it is.
inline void sleep_idle_openmp_threads(char** argv) {
  if (!std::getenv("OMP_WAIT_POLICY") && setenv("OMP_WAIT_POLICY", "PASSIVE", 1) == 0)
    execv("/proc/self/exe", argv);
}

}  // namespace memoe
