#include "kernels/short_conv.h"

#include <cstddef>

#include "kernels/reduce.h"

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
  // dx[src] gathers from the outputs that read it, so each chunk owns its
  // rows; dw is summed over fixed chunks of (batch, time) rows in chunk
  // order, so it does not depend on the thread count.
  chunked_row_sum(batch * seq_len, channels * kernel, batch * seq_len * channels > 65536, dw,
                  [=](int64_t begin, int64_t end, float* dw_part) {
                    for (int64_t row = begin; row < end; ++row) {
                      const int64_t b = row / seq_len, s = row % seq_len;
                      const float* xs = x + row * channels;
                      float* dxs = dx + row * channels;
                      for (int64_t i = 0; i < kernel; ++i) {
                        const int64_t t = s + (kernel - 1 - i) * dilation;  // the output reading x[s] via tap i
                        if (t >= seq_len) continue;
                        const float* dzt = dz + (b * seq_len + t) * channels;
                        for (int64_t c = 0; c < channels; ++c) {
                          dxs[c] += w[c * kernel + i] * dzt[c];
                          dw_part[c * kernel + i] += dzt[c] * xs[c];
                        }
                      }
                    }
                  });
}

}  // namespace memoe
