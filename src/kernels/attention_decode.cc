#include "kernels/attention_decode.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/bf16.h"
#include "core/error.h"

namespace memoe {

namespace {

// The dot products below are vectorised reductions (omp simd): their order
// is fixed by the loop, whatever the thread count.

// Softmax over scores[0..count) in place; returns nothing, weights sum to 1.
void softmax_in_place(float* scores, int64_t count) {
  const float mx = *std::max_element(scores, scores + count);
  float sum = 0.0f;
  for (int64_t t = 0; t < count; ++t) {
    scores[t] = std::exp(scores[t] - mx);
    sum += scores[t];
  }
  const float inv = 1.0f / sum;
  for (int64_t t = 0; t < count; ++t) scores[t] *= inv;
}

bool worth_threads(int64_t n, int64_t heads, int64_t context, int64_t width) {
  // Below this the work (a few hundred microseconds) costs less than
  // waking the thread team.
  return double(n) * double(heads) * double(context) * double(width) > 4e6;
}

}  // namespace

void cached_attention(const float* q, int64_t n, int64_t first, const float* k, const float* v, int64_t heads,
                      int64_t kv_heads, int64_t qk_dim, int64_t v_dim, float scale, float* out) {
  MEMOE_CHECK(n >= 0 && first >= 0 && heads > 0 && kv_heads > 0 && heads % kv_heads == 0,
              "cached attention: bad shape");
  const int64_t group = heads / kv_heads, context = first + n;
#pragma omp parallel if (worth_threads(n, heads, context, qk_dim + v_dim))
  {
    std::vector<float> scores(static_cast<size_t>(context));
#pragma omp for collapse(2) schedule(static)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t h = 0; h < heads; ++h) {
        const float* qi = q + (i * heads + h) * qk_dim;
        const int64_t g = h / group, seen = first + i + 1;
        for (int64_t t = 0; t < seen; ++t) {
          const float* kt = k + (t * kv_heads + g) * qk_dim;
          float s = 0.0f;
#pragma omp simd reduction(+ : s)
          for (int64_t j = 0; j < qk_dim; ++j) s += qi[j] * kt[j];
          scores[size_t(t)] = s * scale;
        }
        softmax_in_place(scores.data(), seen);
        float* o = out + (i * heads + h) * v_dim;
        std::fill(o, o + v_dim, 0.0f);
        for (int64_t t = 0; t < seen; ++t) {
          const float* vt = v + (t * kv_heads + g) * v_dim;
          const float w = scores[size_t(t)];
          for (int64_t j = 0; j < v_dim; ++j) o[j] += w * vt[j];
        }
      }
  }
}

namespace {
// The absorbed attention over weights of element type W (float, or uint16_t
// holding bf16, widened as read).
inline float widen(float x) { return x; }
inline float widen(uint16_t x) { return bf16_to_float(x); }

template <class W>
void absorbed_attention(const float* q, int64_t n, int64_t first, const float* latent, const float* rope_key,
                        const W* kv_b, int64_t heads, int64_t nope, int64_t pe, int64_t kvl, int64_t dv, float scale,
                        float* out) {
  MEMOE_CHECK(n >= 0 && first >= 0 && heads > 0 && kvl > 0, "absorbed MLA attention: bad shape");
  const int64_t dqk = nope + pe, context = first + n;
#pragma omp parallel if (worth_threads(n, heads, context, kvl + pe))
  {
    std::vector<float> scores(static_cast<size_t>(context)), q_lat(static_cast<size_t>(kvl)), o_lat(static_cast<size_t>(kvl));
#pragma omp for collapse(2) schedule(static)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t h = 0; h < heads; ++h) {
        const float* qi = q + (i * heads + h) * dqk;
        const W* w_uk = kv_b + h * (nope + dv) * kvl;  // [nope, kvl]
        const W* w_uv = w_uk + nope * kvl;              // [dv, kvl]
        std::fill(q_lat.begin(), q_lat.end(), 0.0f);
        for (int64_t a = 0; a < nope; ++a)
          for (int64_t j = 0; j < kvl; ++j) q_lat[size_t(j)] += qi[a] * widen(w_uk[a * kvl + j]);
        const int64_t seen = first + i + 1;
        for (int64_t t = 0; t < seen; ++t) {
          const float* ct = latent + t * kvl;
          const float* kt = rope_key + t * pe;
          float s = 0.0f;
#pragma omp simd reduction(+ : s)
          for (int64_t j = 0; j < kvl; ++j) s += q_lat[size_t(j)] * ct[j];
#pragma omp simd reduction(+ : s)
          for (int64_t b = 0; b < pe; ++b) s += qi[nope + b] * kt[b];
          scores[size_t(t)] = s * scale;
        }
        softmax_in_place(scores.data(), seen);
        std::fill(o_lat.begin(), o_lat.end(), 0.0f);
        for (int64_t t = 0; t < seen; ++t) {
          const float* ct = latent + t * kvl;
          const float w = scores[size_t(t)];
          for (int64_t j = 0; j < kvl; ++j) o_lat[size_t(j)] += w * ct[j];
        }
        float* o = out + (i * heads + h) * dv;
        for (int64_t e = 0; e < dv; ++e) {
          float s = 0.0f;
#pragma omp simd reduction(+ : s)
          for (int64_t j = 0; j < kvl; ++j) s += widen(w_uv[e * kvl + j]) * o_lat[size_t(j)];
          o[e] = s;
        }
      }
  }
}

}  // namespace

void mla_absorbed_attention(const float* q, int64_t n, int64_t first, const float* latent, const float* rope_key,
                            WeightMatrix kv_b, int64_t heads, int64_t nope, int64_t pe, int64_t kvl, int64_t dv,
                            float scale, float* out) {
  if (kv_b.f32)
    absorbed_attention(q, n, first, latent, rope_key, kv_b.f32, heads, nope, pe, kvl, dv, scale, out);
  else
    absorbed_attention(q, n, first, latent, rope_key, kv_b.bf16, heads, nope, pe, kvl, dv, scale, out);
}

}  // namespace memoe
