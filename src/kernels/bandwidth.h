// The machine's memory read bandwidth, measured STREAM-style (a sum over an
// array far larger than the caches, best of several passes, on the current
// OpenMP threads): what bounds decode, which reads every active weight once
// per token.
#pragma once
#include <cstddef>

namespace memoe {

// GB/s (1e9 bytes) reading `bytes` of floats.
double measure_read_bandwidth(size_t bytes = size_t(1) << 30, int rounds = 5);

}  // namespace memoe
