#include "kernels/rope.h"

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

RopeTable rope_rows(const RopeTable& table, int64_t first, int64_t n) {
  MEMOE_CHECK(first >= 0 && n >= 0 && first + n <= table.seq_len, "rope table holds ", table.seq_len,
              " positions, need ", first + n);
  const size_t half = size_t(table.dim / 2);
  RopeTable t;
  t.seq_len = n;
  t.dim = table.dim;
  t.cos.assign(table.cos.begin() + long(size_t(first) * half), table.cos.begin() + long(size_t(first + n) * half));
  t.sin.assign(table.sin.begin() + long(size_t(first) * half), table.sin.begin() + long(size_t(first + n) * half));
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
