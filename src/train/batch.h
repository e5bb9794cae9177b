// A training batch: inputs and next-token targets cut from windows of
// seq_len + 1 tokens (the data loader's unit).
#pragma once
#include <cstdint>
#include <vector>

namespace memoe {

struct Batch {
  int64_t batch = 0, seq_len = 0;
  std::vector<int64_t> ids, targets;  // [batch, seq_len] each

  void from_windows(const int64_t* windows, int64_t b, int64_t L) {
    batch = b;
    seq_len = L;
    ids.resize(size_t(b * L));
    targets.resize(size_t(b * L));
    for (int64_t r = 0; r < b; ++r)
      for (int64_t t = 0; t < L; ++t) {
        ids[size_t(r * L + t)] = windows[r * (L + 1) + t];
        targets[size_t(r * L + t)] = windows[r * (L + 1) + t + 1];
      }
  }
};

}  // namespace memoe
