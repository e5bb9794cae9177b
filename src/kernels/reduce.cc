#include "kernels/reduce.h"

namespace memoe {

double sum_squares(const float* x, int64_t n) {
  return chunked_sum(n, kReduceChunk, n > 65536, [x](int64_t begin, int64_t end) {
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = begin; i < end; ++i) s += double(x[i]) * double(x[i]);
    return s;
  });
}

}  // namespace memoe
