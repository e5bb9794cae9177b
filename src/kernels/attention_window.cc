#include "kernels/attention_window.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "kernels/reduce.h"

namespace memoe {

namespace {

float dot(const float* a, const float* b, int64_t n) {
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

bool threaded(const WindowAttentionShape& s) {
  return double(s.batch * s.seq_len) * double(s.n_heads * s.dim) * double(std::min(s.window, s.seq_len)) >
         double(1 << 18);
}

void check_shape(const WindowAttentionShape& s) {
  MEMOE_CHECK(s.batch >= 0 && s.seq_len >= 0 && s.n_heads > 0 && s.dim > 0 && s.window > 0,
              "window attention: bad shape (batch ", s.batch, ", seq_len ", s.seq_len, ", heads ", s.n_heads,
              ", dim ", s.dim, ", window ", s.window, ")");
}

}  // namespace

void window_attention_query(int64_t heads, int64_t dim, int64_t window, float scale, const float* q,
                            const float* sink, const float* keys, int64_t ring, int64_t pos, float* out, float* lse) {
  const int64_t first = std::max<int64_t>(0, pos - window + 1), n = pos - first + 1;
  thread_local std::vector<float> score;  // a query's scores; no allocation per call on the hot path
  score.resize(static_cast<size_t>(n));
  for (int64_t h = 0; h < heads; ++h) {
    const float* qh = q + h * dim;
    float m = sink[h];
    for (int64_t j = 0; j < n; ++j) {
      score[size_t(j)] = scale * dot(qh, keys + ((first + j) % ring) * dim, dim);
      m = std::max(m, score[size_t(j)]);
    }
    float* oh = out + h * dim;
    std::fill(oh, oh + dim, 0.0f);
    float sum = std::exp(sink[h] - m);
    for (int64_t j = 0; j < n; ++j) {
      const float p = std::exp(score[size_t(j)] - m);
      sum += p;
      const float* k = keys + ((first + j) % ring) * dim;
#pragma omp simd
      for (int64_t c = 0; c < dim; ++c) oh[c] += p * k[c];
    }
    const float inv = 1.0f / sum;
    for (int64_t c = 0; c < dim; ++c) oh[c] *= inv;
    if (lse) lse[h] = m + std::log(sum);
  }
}

void window_attention_forward(const WindowAttentionShape& s, const float* q, const float* kv, const float* sink,
                              float* out, float* lse) {
  check_shape(s);
  const int64_t L = s.seq_len, H = s.n_heads, D = s.dim;
#pragma omp parallel for schedule(static) if (threaded(s))
  for (int64_t bt = 0; bt < s.batch * L; ++bt) {
    const int64_t b = bt / L, t = bt % L;
    window_attention_query(H, D, s.window, s.scale, q + bt * H * D, sink, kv + b * L * D, L, t, out + bt * H * D,
                           lse + bt * H);
  }
}

void window_attention_backward(const WindowAttentionShape& s, const float* q, const float* kv, const float* sink,
                               const float* out, const float* lse, const float* dout, float* dq, float* dkv,
                               float* dsink) {
  check_shape(s);
  const int64_t B = s.batch, L = s.seq_len, H = s.n_heads, D = s.dim, W = s.window;
  const bool parallel = threaded(s);
  // Per (query, head), the probabilities p_j and score gradients ds_j =
  // p_j (dout · k_j - delta) of its window, slot j - first (delta = dout ·
  // out: the sink's value is zero, so out is all the probability-weighted
  // values). The queries' pass computes them, the keys' pass reads them.
  const int64_t span = std::min(W, L);
  std::vector<float> prob(size_t(B * L * H * span)), dscore(prob.size());
  // Queries: dq = scale · sum_j ds_j k_j; the sink's logit gets -p_sink ·
  // delta. One row of dsink partials a query, summed in fixed chunks.
  std::vector<float> sink_grad(size_t(H), 0.0f);
  chunked_row_sum(B * L, H, parallel, sink_grad.data(), [&](int64_t begin, int64_t end, float* partial) {
    for (int64_t bt = begin; bt < end; ++bt) {
      const int64_t b = bt / L, t = bt % L, first = std::max<int64_t>(0, t - W + 1);
      const float* keys = kv + b * L * D;
      for (int64_t h = 0; h < H; ++h) {
        const int64_t row = bt * H + h;
        const float* qh = q + row * D;
        const float* gh = dout + row * D;
        const float d = dot(gh, out + row * D, D);
        partial[h] += -std::exp(sink[h] - lse[row]) * d;
        float* dqh = dq + row * D;
        for (int64_t j = first; j <= t; ++j) {
          const float* k = keys + j * D;
          const float p = std::exp(s.scale * dot(qh, k, D) - lse[row]);
          const float ds = p * (dot(gh, k, D) - d);
          prob[size_t(row * span + j - first)] = p;
          dscore[size_t(row * span + j - first)] = ds;
#pragma omp simd
          for (int64_t c = 0; c < D; ++c) dqh[c] += s.scale * ds * k[c];
        }
      }
    }
  });
  for (int64_t h = 0; h < H; ++h) dsink[h] += sink_grad[size_t(h)];
  // Keys (= values): dk_j = sum over the queries t in j .. j + W - 1 and
  // heads of scale · ds q_t + p dout_t.
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t bj = 0; bj < B * L; ++bj) {
    const int64_t b = bj / L, j = bj % L, last = std::min(L - 1, j + W - 1);
    float* dk = dkv + bj * D;
    for (int64_t t = j; t <= last; ++t) {
      const int64_t slot = j - std::max<int64_t>(0, t - W + 1);
      for (int64_t h = 0; h < H; ++h) {
        const int64_t row = (b * L + t) * H + h;
        const float* qh = q + row * D;
        const float* gh = dout + row * D;
        const float p = prob[size_t(row * span + slot)], ds = dscore[size_t(row * span + slot)];
#pragma omp simd
        for (int64_t c = 0; c < D; ++c) dk[c] += s.scale * ds * qh[c] + p * gh[c];
      }
    }
  }
}

}  // namespace memoe
