#include "kernels/embedding.h"

#include <algorithm>
#include <cstring>

namespace memoe {

void embedding_forward(WeightMatrix table, const int64_t* ids, int64_t n, int64_t d, float* out) {
#pragma omp parallel for schedule(static) if (n * d > 65536)
  for (int64_t i = 0; i < n; ++i) table.copy_row(ids[i] * d, d, out + i * d);
}

void embedding_backward(const float* dout, const int64_t* ids, int64_t n, int64_t d, float* dtable) {
  // Each task owns a block of columns and walks every token in order, so no
  // two threads touch one value and each value sums in token order.
  constexpr int64_t kColumns = 32;
  const int64_t blocks = (d + kColumns - 1) / kColumns;
#pragma omp parallel for schedule(static) if (n * d > 65536 && blocks > 1)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t c0 = blk * kColumns, c1 = std::min(d, c0 + kColumns);
    for (int64_t i = 0; i < n; ++i) {
      float* row = dtable + ids[i] * d;
      const float* src = dout + i * d;
      for (int64_t j = c0; j < c1; ++j) row[j] += src[j];
    }
  }
}

void remap_ids(const int64_t* ids, int64_t n, const int64_t* map, int64_t* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = map ? map[ids[i]] : ids[i];
}

}  // namespace memoe
