#include "kernels/rope.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace memoe {

RopeTable make_rope_table(const std::vector<double>& freqs, int64_t seq_len) {
  RopeTable t;
  t.seq_len = seq_len;
  t.dim = int64_t(freqs.size()) * 2;
  size_t half = freqs.size();
  t.cos.resize(size_t(seq_len) * half);
  t.sin.resize(size_t(seq_len) * half);
  for (int64_t p = 0; p < seq_len; ++p)
    for (size_t i = 0; i < half; ++i) {
      double angle = double(p) * freqs[i];
      t.cos[size_t(p) * half + i] = float(std::cos(angle));
      t.sin[size_t(p) * half + i] = float(std::sin(angle));
    }
  return t;
}

RopeTable rope_at(const RopeTable& table, const std::vector<int64_t>& positions) {
  const size_t half = size_t(table.dim / 2);
  RopeTable t;
  t.seq_len = int64_t(positions.size());
  t.dim = table.dim;
  t.cos.resize(positions.size() * half);
  t.sin.resize(positions.size() * half);
  for (size_t r = 0; r < positions.size(); ++r) {
    const int64_t p = positions[r];
    MEMOE_CHECK(p >= 0 && p < table.seq_len, "rope table holds ", table.seq_len, " positions, need ", p + 1);
    std::copy_n(table.cos.begin() + long(size_t(p) * half), half, t.cos.begin() + long(r * half));
    std::copy_n(table.sin.begin() + long(size_t(p) * half), half, t.sin.begin() + long(r * half));
  }
  return t;
}

void rope_apply(float* x, int64_t batch, int64_t seq_len, int64_t heads, int64_t head_stride, int64_t offset,
                const RopeTable& table, bool inverse) {
  MEMOE_CHECK(seq_len <= table.seq_len, "rope table holds ", table.seq_len, " positions, need ", seq_len);
  const int64_t half = table.dim / 2;
  const float sign = inverse ? -1.0f : 1.0f;
#pragma omp parallel for collapse(2) schedule(static) if (batch * seq_len * heads * half > 65536)
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t < seq_len; ++t) {
      const float* c = table.cos.data() + t * half;
      const float* s = table.sin.data() + t * half;
      float* row = x + ((b * seq_len + t) * heads) * head_stride + offset;
      for (int64_t h = 0; h < heads; ++h) {
        float* v = row + h * head_stride;
        for (int64_t i = 0; i < half; ++i) {
          float x0 = v[2 * i], x1 = v[2 * i + 1];
          float si = sign * s[i];
          v[2 * i] = x0 * c[i] - x1 * si;
          v[2 * i + 1] = x0 * si + x1 * c[i];
        }
      }
    }
}

}  // namespace memoe
