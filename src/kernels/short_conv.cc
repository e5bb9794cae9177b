#include "kernels/short_conv.h"

#include <omp.h>

#include <cstddef>
#include <vector>

namespace memoe {

using std::size_t;

void short_conv_forward(const float* x, const float* w, int64_t batch, int64_t seq_len, int64_t channels,
                        int64_t kernel, int64_t dilation, float* z) {
#pragma omp parallel for collapse(2) schedule(static) if (batch * seq_len * channels > 65536)
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t < seq_len; ++t) {
      float* zt = z + (b * seq_len + t) * channels;
      for (int64_t c = 0; c < channels; ++c) zt[c] = 0.0f;
      for (int64_t i = 0; i < kernel; ++i) {
        int64_t src = t - (kernel - 1 - i) * dilation;
        if (src < 0) continue;
        const float* xs = x + (b * seq_len + src) * channels;
        for (int64_t c = 0; c < channels; ++c) zt[c] += w[c * kernel + i] * xs[c];
      }
    }
}

void short_conv_backward(const float* dz, const float* x, const float* w, int64_t batch, int64_t seq_len,
                         int64_t channels, int64_t kernel, int64_t dilation, float* dx, float* dw) {
  // dx[src] gathers from the outputs that read it, so each thread owns its
  // rows; dw is reduced over per-thread partial sums.
  const bool parallel = batch * seq_len * channels > 65536;
  const int threads = parallel ? omp_get_max_threads() : 1;
  std::vector<float> dw_parts(size_t(threads) * size_t(channels * kernel), 0.0f);
#pragma omp parallel num_threads(threads)
  {
    float* dw_local = dw_parts.data() + size_t(omp_get_thread_num()) * size_t(channels * kernel);
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t s = 0; s < seq_len; ++s) {
        const float* xs = x + (b * seq_len + s) * channels;
        float* dxs = dx + (b * seq_len + s) * channels;
        for (int64_t i = 0; i < kernel; ++i) {
          int64_t t = s + (kernel - 1 - i) * dilation;  // the output that reads x[s] through tap i
          if (t >= seq_len) continue;
          const float* dzt = dz + (b * seq_len + t) * channels;
          for (int64_t c = 0; c < channels; ++c) {
            dxs[c] += w[c * kernel + i] * dzt[c];
            dw_local[c * kernel + i] += dzt[c] * xs[c];
          }
        }
      }
  }
  for (int t = 0; t < threads; ++t)
    for (int64_t j = 0; j < channels * kernel; ++j) dw[j] += dw_parts[size_t(t) * size_t(channels * kernel) + size_t(j)];
}

}  // namespace memoe
