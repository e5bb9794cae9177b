// Reductions whose result does not depend on the thread count: the input is
// cut into chunks of a fixed size (a constant, never derived from the number
// of threads), chunk partials are computed in parallel, and the partials are
// added in chunk order. 1, 2 or 64 threads give bitwise the same sum, so a
// run resumed on a machine with another core count stays exact.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

namespace memoe {

// Elements per chunk of a flat reduction (sum_squares).
inline constexpr int64_t kReduceChunk = 16384;
// Rows per chunk of a row reduction (norm and conv weight gradients, losses).
inline constexpr int64_t kReduceRows = 64;

// sum over chunks c of part(begin, end) -> double, chunk c covering
// [c*chunk, min(n, (c+1)*chunk)); parts run in parallel when `parallel`,
// and are added in chunk order either way.
template <typename Part>
double chunked_sum(int64_t n, int64_t chunk, bool parallel, Part&& part) {
  const int64_t chunks = (n + chunk - 1) / chunk;
  if (chunks <= 1) return n > 0 ? part(int64_t{0}, n) : 0.0;
  std::vector<double> partial(static_cast<size_t>(chunks));
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t c = 0; c < chunks; ++c) partial[size_t(c)] = part(c * chunk, std::min(n, (c + 1) * chunk));
  double total = 0.0;
  for (double p : partial) total += p;
  return total;
}

// out[0..width) += sum over chunks of rows of the vectors part(begin, end,
// partial) adds into `partial` (zeroed, `width` long) for rows [begin, end),
// chunks of kReduceRows rows. Chunks run in parallel when `parallel`; the
// partials are added per column in chunk order, so the result is the same
// for any thread count (columns are summed in parallel too).
template <typename Part>
void chunked_row_sum(int64_t n_rows, int64_t width, bool parallel, float* out, Part&& part) {
  const int64_t chunks = (n_rows + kReduceRows - 1) / kReduceRows;
  if (chunks == 0 || width == 0) return;
  std::vector<float> partial(static_cast<size_t>(chunks * width), 0.0f);
#pragma omp parallel if (parallel)
  {
#pragma omp for schedule(static)
    for (int64_t c = 0; c < chunks; ++c)
      part(c * kReduceRows, std::min(n_rows, (c + 1) * kReduceRows), partial.data() + c * width);
#pragma omp for schedule(static)
    for (int64_t j = 0; j < width; ++j) {
      float s = out[j];
      for (int64_t c = 0; c < chunks; ++c) s += partial[size_t(c * width + j)];
      out[j] = s;
    }
  }
}

// sum_i x_i^2 in double, chunked as above.
double sum_squares(const float* x, int64_t n);

}  // namespace memoe
