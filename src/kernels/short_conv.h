// Causal depthwise 1-D convolution over time with dilation (Engram §5.4):
// z[b, t, c] = sum_i w[c, i] · x[b, t − (k−1−i)·dilation, c], zero before t = 0.
#pragma once
#include <cstdint>

namespace memoe {

// x, z: [batch, seq_len, channels]; w: [channels, kernel]. Overwrites z.
void short_conv_forward(const float* x, const float* w, int64_t batch, int64_t seq_len, int64_t channels,
                        int64_t kernel, int64_t dilation, float* z);
// Adds into dx and dw.
void short_conv_backward(const float* dz, const float* x, const float* w, int64_t batch, int64_t seq_len,
                         int64_t channels, int64_t kernel, int64_t dilation, float* dx, float* dw);

}  // namespace memoe
