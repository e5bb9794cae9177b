#include "kernels/mhc.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/linear.h"
#include "kernels/reduce.h"

namespace memoe {

namespace {

float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

// Token loops run on the team once a call has this much work. Their dot
// products are vectorised reductions (a fixed order for a given build, so
// the bits still do not depend on the thread count).
bool threaded(const MhcDims& dims) { return double(dims.tokens) * double(dims.width()) > double(1 << 16); }

// z = (fn · v)·r per token, and r. fn has `rows` rows.
void mixes_forward(const MhcDims& dims, const float* x, const float* fn, int rows, float* mixes, float* rstd) {
  const int64_t N = dims.tokens, W = dims.width();
  gemm(false, true, N, rows, W, 1.0f, x, W, fn, W, 0.0f, mixes, rows);
#pragma omp parallel for schedule(static) if (threaded(dims))
  for (int64_t t = 0; t < N; ++t) {
    const float* v = x + t * W;
    float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
    for (int64_t i = 0; i < W; ++i) ss += v[i] * v[i];
    const float r = 1.0f / std::sqrt(ss / float(W) + dims.norm_eps);
    rstd[t] = r;
    for (int j = 0; j < rows; ++j) mixes[t * rows + j] *= r;
  }
}

// The backward of mixes_forward given dz [N, rows]: adds into dx and dfn.
// dz is overwritten with dz·r (the gradient of fn · v).
void mixes_backward(const MhcDims& dims, const float* x, const float* fn, int rows, const float* mixes,
                    const float* rstd, float* dz, float* dx, float* dfn) {
  const int64_t N = dims.tokens, W = dims.width();
#pragma omp parallel for schedule(static) if (threaded(dims))
  for (int64_t t = 0; t < N; ++t) {
    // z = g·r with r = (mean(v^2) + eps)^-1/2: dv += (sum_j dz_j g_j)·dr/dv
    // = -(sum_j dz_j z_j)·r^2·v / W.
    const float r = rstd[t];
    float dot = 0.0f;
    for (int j = 0; j < rows; ++j) dot += dz[t * rows + j] * mixes[t * rows + j];
    const float c = -dot * r * r / float(W);
    const float* v = x + t * W;
    float* dv = dx + t * W;
    for (int64_t i = 0; i < W; ++i) dv[i] += c * v[i];
    for (int j = 0; j < rows; ++j) dz[t * rows + j] *= r;
  }
  gemm(false, false, N, W, rows, 1.0f, dz, rows, fn, W, 1.0f, dx, W);
  gemm(true, false, rows, W, N, 1.0f, dz, rows, x, W, 1.0f, dfn, W);
}

// Sinkhorn on one token's n x n logits, in DeepSeek's order. When `trace`
// is not null it keeps what the backward needs: the softmax, then the input
// of each of the 2·iters - 1 divisions (2·iters·n² floats).
void sinkhorn(int n, int iters, float eps, const float* logits, float* m, float* trace) {
  const int nn = n * n;
  for (int j = 0; j < n; ++j) {
    const float* row = logits + j * n;
    const float mx = *std::max_element(row, row + n);
    float s = 0.0f;
    for (int k = 0; k < n; ++k) s += (m[j * n + k] = std::exp(row[k] - mx));
    for (int k = 0; k < n; ++k) m[j * n + k] /= s;
  }
  if (trace) std::copy(m, m + nn, trace);
  for (int i = 0; i < nn; ++i) m[i] += eps;
  const int steps = 2 * iters - 1;  // column, then (row, column) x (iters - 1)
  for (int s = 1; s <= steps; ++s) {
    if (trace) std::copy(m, m + nn, trace + s * nn);
    const bool column = s % 2 == 1;
    for (int a = 0; a < n; ++a) {
      float sum = 0.0f;
      for (int b = 0; b < n; ++b) sum += column ? m[b * n + a] : m[a * n + b];
      const float inv = 1.0f / (sum + eps);
      for (int b = 0; b < n; ++b) (column ? m[b * n + a] : m[a * n + b]) *= inv;
    }
  }
}

// Gradient of the logits from dm (overwritten) and the forward's trace.
void sinkhorn_backward(int n, int iters, float eps, const float* trace, float* dm, float* dlogits) {
  const int nn = n * n;
  for (int s = 2 * iters - 1; s >= 1; --s) {
    const float* in = trace + s * nn;
    const bool column = s % 2 == 1;
    // y = x/(sum + eps): dx = (dy - sum_b dy_b·y_b)/(sum + eps).
    for (int a = 0; a < n; ++a) {
      float sum = 0.0f;
      for (int b = 0; b < n; ++b) sum += column ? in[b * n + a] : in[a * n + b];
      const float inv = 1.0f / (sum + eps);
      float dot = 0.0f;
      for (int b = 0; b < n; ++b) {
        const int i = column ? b * n + a : a * n + b;
        dot += dm[i] * in[i] * inv;
      }
      for (int b = 0; b < n; ++b) {
        const int i = column ? b * n + a : a * n + b;
        dm[i] = (dm[i] - dot) * inv;
      }
    }
  }
  const float* soft = trace;  // the "+ eps" after the softmax passes dm through
  for (int j = 0; j < n; ++j) {
    float dot = 0.0f;
    for (int k = 0; k < n; ++k) dot += dm[j * n + k] * soft[j * n + k];
    for (int k = 0; k < n; ++k) dlogits[j * n + k] = soft[j * n + k] * (dm[j * n + k] - dot);
  }
}

// u = sum_j w_j x_j for one token.
void collapse(int n, int64_t d, const float* x, const float* w, float* u) {
  for (int64_t c = 0; c < d; ++c) u[c] = w[0] * x[c];
  for (int j = 1; j < n; ++j)
    for (int64_t c = 0; c < d; ++c) u[c] += w[j] * x[j * d + c];
}

// dw_j = <du, x_j> and dx_j += w_j du for one token.
void collapse_backward(int n, int64_t d, const float* x, const float* w, const float* du, float* dx, float* dw) {
  for (int j = 0; j < n; ++j) {
    float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
    for (int64_t c = 0; c < d; ++c) {
      dot += du[c] * x[j * d + c];
      dx[j * d + c] += w[j] * du[c];
    }
    dw[j] = dot;
  }
}

}  // namespace

void mhc_pre_forward(const MhcDims& dims, const float* x, const float* fn, const float* scale, const float* base,
                     float* mixes, float* rstd, float* pre, float* post, float* comb, float* u) {
  const int n = dims.n, m = dims.mixes();
  const int64_t N = dims.tokens, d = dims.d;
  mixes_forward(dims, x, fn, m, mixes, rstd);
#pragma omp parallel for schedule(static) if (threaded(dims))
  for (int64_t t = 0; t < N; ++t) {
    const float* z = mixes + t * m;
    float* p = pre + t * n;
    float* q = post + t * n;
    float logits[16 * 16];
    for (int j = 0; j < n; ++j) {
      p[j] = sigmoid(scale[0] * z[j] + base[j]) + dims.hc_eps;
      q[j] = 2.0f * sigmoid(scale[1] * z[n + j] + base[n + j]);
    }
    for (int i = 0; i < n * n; ++i) logits[i] = scale[2] * z[2 * n + i] + base[2 * n + i];
    sinkhorn(n, dims.sinkhorn_iters, dims.hc_eps, logits, comb + t * n * n, nullptr);
    collapse(n, d, x + t * dims.width(), p, u + t * d);
  }
}

void mhc_pre_backward(const MhcDims& dims, const float* x, const float* fn, const float* scale, const float* base,
                      const float* mixes, const float* rstd, const float* pre, const float* du, const float* dpost,
                      const float* dcomb, float* dx, float* dfn, float* dscale, float* dbase) {
  const int n = dims.n, m = dims.mixes(), nn = n * n;
  const int64_t N = dims.tokens, d = dims.d, W = dims.width();
  std::vector<float> dz(size_t(N * m));
  // Per-token gradients of z, and their sums into dscale and dbase: one row
  // of [dbase (m) | dscale (3)] a token, summed in fixed chunks of tokens.
  std::vector<float> dsb(size_t(m + 3), 0.0f);
  chunked_row_sum(N, m + 3, threaded(dims), dsb.data(), [&](int64_t begin, int64_t end, float* partial) {
    std::vector<float> trace(size_t(2 * dims.sinkhorn_iters * nn));
    float logits[16 * 16], comb[16 * 16], dm[16 * 16], dlogits[16 * 16], dpre[16];
    for (int64_t t = begin; t < end; ++t) {
      const float* z = mixes + t * m;
      float* g = dz.data() + t * m;
      collapse_backward(n, d, x + t * W, pre + t * n, du + t * d, dx + t * W, dpre);
      for (int j = 0; j < n; ++j) {
        // pre = sigmoid(a) + eps, post = 2 sigmoid(b): d/da = s(1 - s) (x2).
        const float sp = sigmoid(scale[0] * z[j] + base[j]);
        const float da = dpre[j] * sp * (1.0f - sp);
        const float sq = sigmoid(scale[1] * z[n + j] + base[n + j]);
        const float db = dpost[t * n + j] * 2.0f * sq * (1.0f - sq);
        g[j] = da * scale[0];
        g[n + j] = db * scale[1];
        partial[j] += da;
        partial[n + j] += db;
        partial[m] += da * z[j];
        partial[m + 1] += db * z[n + j];
      }
      for (int i = 0; i < nn; ++i) logits[i] = scale[2] * z[2 * n + i] + base[2 * n + i];
      sinkhorn(n, dims.sinkhorn_iters, dims.hc_eps, logits, comb, trace.data());
      std::copy(dcomb + t * nn, dcomb + (t + 1) * nn, dm);
      sinkhorn_backward(n, dims.sinkhorn_iters, dims.hc_eps, trace.data(), dm, dlogits);
      for (int i = 0; i < nn; ++i) {
        g[2 * n + i] = dlogits[i] * scale[2];
        partial[2 * n + i] += dlogits[i];
        partial[m + 2] += dlogits[i] * z[2 * n + i];
      }
    }
  });
  for (int j = 0; j < m; ++j) dbase[j] += dsb[size_t(j)];
  for (int j = 0; j < 3; ++j) dscale[j] += dsb[size_t(m + j)];
  mixes_backward(dims, x, fn, m, mixes, rstd, dz.data(), dx, dfn);
}

void mhc_post_forward(const MhcDims& dims, const float* x, const float* f, const float* post, const float* comb,
                      float* y) {
  const int n = dims.n;
  const int64_t N = dims.tokens, d = dims.d, W = dims.width();
#pragma omp parallel for schedule(static) if (threaded(dims))
  for (int64_t t = 0; t < N; ++t) {
    const float* xs = x + t * W;
    const float* c = comb + t * n * n;
    for (int k = 0; k < n; ++k) {
      float* yk = y + t * W + k * d;
      const float p = post[t * n + k];
      for (int64_t i = 0; i < d; ++i) yk[i] = p * f[t * d + i];
      for (int j = 0; j < n; ++j) {
        const float cjk = c[j * n + k];
        for (int64_t i = 0; i < d; ++i) yk[i] += cjk * xs[j * d + i];
      }
    }
  }
}

void mhc_post_backward(const MhcDims& dims, const float* x, const float* f, const float* post, const float* comb,
                       const float* dy, float* dx, float* df, float* dpost, float* dcomb) {
  const int n = dims.n;
  const int64_t N = dims.tokens, d = dims.d, W = dims.width();
#pragma omp parallel for schedule(static) if (threaded(dims))
  for (int64_t t = 0; t < N; ++t) {
    const float* xs = x + t * W;
    const float* dys = dy + t * W;
    const float* c = comb + t * n * n;
    float* dft = df + t * d;
    std::fill(dft, dft + d, 0.0f);
    for (int k = 0; k < n; ++k) {
      const float* dyk = dys + k * d;
      const float p = post[t * n + k];
      float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
      for (int64_t i = 0; i < d; ++i) {
        dft[i] += p * dyk[i];
        dot += dyk[i] * f[t * d + i];
      }
      dpost[t * n + k] = dot;
    }
    for (int j = 0; j < n; ++j) {
      float* dxj = dx + t * W + j * d;
      for (int k = 0; k < n; ++k) {
        const float* dyk = dys + k * d;
        const float cjk = c[j * n + k];
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int64_t i = 0; i < d; ++i) {
          dot += dyk[i] * xs[j * d + i];
          dxj[i] += cjk * dyk[i];
        }
        dcomb[t * n * n + j * n + k] = dot;
      }
    }
  }
}

void mhc_head_forward(const MhcDims& dims, const float* x, const float* fn, const float* scale, const float* base,
                      float* mixes, float* rstd, float* w, float* y) {
  const int n = dims.n;
  const int64_t N = dims.tokens, d = dims.d;
  mixes_forward(dims, x, fn, n, mixes, rstd);
#pragma omp parallel for schedule(static) if (threaded(dims))
  for (int64_t t = 0; t < N; ++t) {
    for (int j = 0; j < n; ++j) w[t * n + j] = sigmoid(scale[0] * mixes[t * n + j] + base[j]) + dims.hc_eps;
    collapse(n, d, x + t * dims.width(), w + t * n, y + t * d);
  }
}

void mhc_head_backward(const MhcDims& dims, const float* x, const float* fn, const float* scale, const float* base,
                       const float* mixes, const float* rstd, const float* w, const float* dy, float* dx, float* dfn,
                       float* dscale, float* dbase) {
  const int n = dims.n;
  const int64_t N = dims.tokens, d = dims.d, W = dims.width();
  std::vector<float> dz(size_t(N * n));
  std::vector<float> dsb(size_t(n + 1), 0.0f);
  chunked_row_sum(N, n + 1, threaded(dims), dsb.data(), [&](int64_t begin, int64_t end, float* partial) {
    float dw[16];
    for (int64_t t = begin; t < end; ++t) {
      collapse_backward(n, d, x + t * W, w + t * n, dy + t * d, dx + t * W, dw);
      for (int j = 0; j < n; ++j) {
        const float s = sigmoid(scale[0] * mixes[t * n + j] + base[j]);
        const float da = dw[j] * s * (1.0f - s);
        dz[size_t(t * n + j)] = da * scale[0];
        partial[j] += da;
        partial[n] += da * mixes[t * n + j];
      }
    }
  });
  for (int j = 0; j < n; ++j) dbase[j] += dsb[size_t(j)];
  dscale[0] += dsb[size_t(n)];
  mixes_backward(dims, x, fn, n, mixes, rstd, dz.data(), dx, dfn);
}

}  // namespace memoe
