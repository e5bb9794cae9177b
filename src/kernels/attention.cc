#include "kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/error.h"
#include "kernels/attention_tiles.h"

namespace memoe {
namespace {

using attention_tiles::exp_nonpositive;

// Query and key block size. 64 x 64 score tiles (16 KiB) plus the K/V tiles
// stay in L1/L2 for head dims up to 192.
constexpr int64_t kBlock = 64;

// Index arithmetic for the [B, L, heads, D] and [B, H, L] layouts.
struct Geometry {
  explicit Geometry(const AttentionShape& s)
      : seq_len(s.seq_len),
        n_heads(s.n_heads),
        n_kv_heads(s.n_kv_heads),
        qk_dim(s.qk_dim),
        v_dim(s.v_dim),
        group(s.n_heads / s.n_kv_heads),
        n_blocks((s.seq_len + kBlock - 1) / kBlock),
        scale(s.scale) {}

  int64_t seq_len, n_heads, n_kv_heads, qk_dim, v_dim, group, n_blocks;
  float scale;

  // Distance between consecutive positions in each tensor.
  int64_t q_stride() const { return n_heads * qk_dim; }
  int64_t k_stride() const { return n_kv_heads * qk_dim; }
  int64_t v_stride() const { return n_kv_heads * v_dim; }
  int64_t o_stride() const { return n_heads * v_dim; }

  int64_t q_at(int64_t b, int64_t h, int64_t t) const { return ((b * seq_len + t) * n_heads + h) * qk_dim; }
  int64_t k_at(int64_t b, int64_t g, int64_t t) const {
    return ((b * seq_len + t) * n_kv_heads + g) * qk_dim;
  }
  int64_t v_at(int64_t b, int64_t g, int64_t t) const { return ((b * seq_len + t) * n_kv_heads + g) * v_dim; }
  int64_t o_at(int64_t b, int64_t h, int64_t t) const { return ((b * seq_len + t) * n_heads + h) * v_dim; }
  int64_t lse_at(int64_t b, int64_t h, int64_t t) const { return (b * n_heads + h) * seq_len + t; }

  int64_t block_len(int64_t block) const { return std::min(kBlock, seq_len - block * kBlock); }
};

void validate(const AttentionShape& s) {
  MEMOE_CHECK(s.batch >= 0 && s.seq_len >= 0,
              "attention: batch and seq_len must be >= 0, got batch=", s.batch, " seq_len=", s.seq_len);
  MEMOE_CHECK(s.n_heads > 0 && s.n_kv_heads > 0,
              "attention: head counts must be positive, got n_heads=", s.n_heads,
              " n_kv_heads=", s.n_kv_heads);
  MEMOE_CHECK(s.n_heads % s.n_kv_heads == 0, "attention: n_heads=", s.n_heads,
              " is not a multiple of n_kv_heads=", s.n_kv_heads);
  MEMOE_CHECK(s.qk_dim > 0 && s.v_dim > 0, "attention: head dims must be positive, got qk_dim=", s.qk_dim,
              " v_dim=", s.v_dim);
  MEMOE_CHECK(std::isfinite(s.scale), "attention: scale must be finite, got ", s.scale);
}

// Waking a thread team costs tens of microseconds (far more on a busy
// machine); tiny problems, e.g. decoding short prompts, run faster alone.
bool worth_threads(const AttentionShape& s) {
  const double causal_pairs = 0.5 * double(s.seq_len) * double(s.seq_len + 1);
  const double flops = 2.0 * double(s.batch * s.n_heads) * causal_pairs * double(s.qk_dim + s.v_dim);
  return flops > 4e6;
}

void require_pointer(const void* p, const char* name) {
  MEMOE_CHECK(p != nullptr, "attention: null pointer for ", name);
}

// Score tiles come in two orientations. The forward pass and the dq pass
// stream key blocks past one query block, so they keep Q^T (transposed once
// per query block) and build S^T = K Q^T as [key x query]: no per-tile
// transposes, and the online-softmax statistics vectorise across queries.
// The dk/dv pass streams query blocks past one key block, so it keeps K^T
// and V^T and builds S = Q K^T as [query x key].

// First query (offset within its block) that may see key k0 + j.
int64_t first_visible_query(int64_t q0, int64_t k0, int64_t j) { return std::max<int64_t>(0, k0 + j - q0); }

// Number of keys of the block starting at k0 (length nk) visible to query q_pos.
int64_t visible_keys(int64_t q_pos, int64_t k0, int64_t nk) {
  return std::clamp<int64_t>(q_pos - k0 + 1, 0, nk);
}

// dst[d * kBlock + j] = factor * src[j * ld + d] for j < n; columns n..kBlock-1
// are zeroed so products can always run kBlock wide.
void transpose_block(const float* src, int64_t ld, int64_t n, int64_t dim, float factor, float* dst) {
  for (int64_t d = 0; d < dim; ++d) std::fill(dst + d * kBlock + n, dst + (d + 1) * kBlock, 0.0f);
  for (int64_t j = 0; j < n; ++j)
    for (int64_t d = 0; d < dim; ++d) dst[d * kBlock + j] = factor * src[j * ld + d];
}

// Per-thread tiles. Sized once per parallel region; nothing scales with L.
struct Scratch {
  explicit Scratch(const Geometry& g)
      : qk_t(g.qk_dim * kBlock),
        v_t(g.v_dim * kBlock),
        scores(kBlock * kBlock),
        dscores(kBlock * kBlock),
        acc_qk(kBlock * g.qk_dim),
        acc_v(kBlock * g.v_dim),
        row_a(kBlock),
        row_b(kBlock),
        row_c(kBlock) {}
  std::vector<float> qk_t, v_t;            // transposed tiles [D x kBlock]: Q^T or K^T, dO^T or V^T
  std::vector<float> scores, dscores;      // [kBlock x kBlock]: S then P; dP then dS
  std::vector<float> acc_qk, acc_v;        // accumulators [kBlock x Dqk], [kBlock x Dv]
  std::vector<float> row_a, row_b, row_c;  // per query statistics
};

// One (batch, head, query block): stream over key blocks keeping a running
// max m and sum l per query, rescaling the output accumulator as m grows.
template <class T>
void forward_query_block(const Geometry& g, Scratch& w, int64_t b, int64_t h, int64_t q_block, const float* q,
                         const float* k, const float* v, float* out, float* lse) {
  const int64_t q0 = q_block * kBlock;
  const int64_t nq = g.block_len(q_block);
  const int64_t kv_head = h / g.group;
  float* acc = w.acc_v.data();  // unnormalised output [nq x Dv]
  float* run_max = w.row_a.data();
  float* run_sum = w.row_b.data();
  float* rescale = w.row_c.data();
  float* st = w.scores.data();  // [key x query]
  transpose_block(q + g.q_at(b, h, q0), g.q_stride(), nq, g.qk_dim, g.scale, w.qk_t.data());
  std::fill(acc, acc + nq * g.v_dim, 0.0f);
  std::fill(run_max, run_max + kBlock, -std::numeric_limits<float>::infinity());
  std::fill(run_sum, run_sum + kBlock, 0.0f);

  const int64_t last_query = q0 + nq - 1;
  for (int64_t k0 = 0; k0 <= last_query; k0 += kBlock) {  // blocks past the diagonal are fully masked
    const int64_t nk = std::min(kBlock, last_query + 1 - k0);
    T::tile_product(nk, kBlock, g.qk_dim, k + g.k_at(b, kv_head, k0), g.k_stride(), 1, w.qk_t.data(), kBlock, st,
                 kBlock, false);
    for (int64_t j = 0; j < nk; ++j)
      std::fill(st + j * kBlock, st + j * kBlock + first_visible_query(q0, k0, j),
                -std::numeric_limits<float>::infinity());
    // Columns past nq hold scores of zero-padded queries: finite, never read.
    for (int64_t i = 0; i < kBlock; ++i) rescale[i] = run_max[i];
    for (int64_t j = 0; j < nk; ++j)
      for (int64_t i = 0; i < kBlock; ++i) rescale[i] = std::max(rescale[i], st[j * kBlock + i]);
    for (int64_t i = 0; i < kBlock; ++i) {
      // Key 0 is visible to every query, so the max is finite from block 0 on.
      const float new_max = rescale[i];
      rescale[i] = exp_nonpositive(run_max[i] - new_max);  // 0 on the first block
      run_max[i] = new_max;
      run_sum[i] *= rescale[i];
    }
    for (int64_t j = 0; j < nk; ++j) {
      float* row = st + j * kBlock;
      for (int64_t i = 0; i < kBlock; ++i) {
        row[i] = exp_nonpositive(row[i] - run_max[i]);  // masked -inf -> 0
        run_sum[i] += row[i];
      }
    }
    for (int64_t i = 0; i < nq; ++i) {
      if (rescale[i] == 1.0f) continue;
      float* acc_row = acc + i * g.v_dim;
      for (int64_t d = 0; d < g.v_dim; ++d) acc_row[d] *= rescale[i];
    }
    T::tile_product(nq, g.v_dim, nk, st, 1, kBlock, v + g.v_at(b, kv_head, k0), g.v_stride(), acc, g.v_dim,
                 true);
  }

  for (int64_t i = 0; i < nq; ++i) {
    const float inv_sum = 1.0f / run_sum[i];  // >= 1: the max term contributes exp(0)
    const float* acc_row = acc + i * g.v_dim;
    float* out_row = out + g.o_at(b, h, q0 + i);
    for (int64_t d = 0; d < g.v_dim; ++d) out_row[d] = acc_row[d] * inv_sum;
    lse[g.lse_at(b, h, q0 + i)] = run_max[i] + std::log(run_sum[i]);
  }
}

// delta[i] = sum_d dout[i, d] * out[i, d] for the nq rows of a query block,
// the row term of the softmax backward (dS = P * (dP - delta)); lse_rows
// gathers the forward's lse. Entries from nq to kBlock are zeroed.
void row_statistics(const Geometry& g, int64_t b, int64_t h, int64_t q0, int64_t nq, const float* out,
                    const float* dout, const float* lse, float* delta, float* lse_rows) {
  for (int64_t i = 0; i < nq; ++i) {
    const float* o_row = out + g.o_at(b, h, q0 + i);
    const float* do_row = dout + g.o_at(b, h, q0 + i);
    float sum = 0.0f;  // in order, not vectorised: the same bits at any vector width
    for (int64_t d = 0; d < g.v_dim; ++d) sum += o_row[d] * do_row[d];
    delta[i] = sum;
    lse_rows[i] = lse[g.lse_at(b, h, q0 + i)];
  }
  std::fill(delta + nq, delta + kBlock, 0.0f);
  std::fill(lse_rows + nq, lse_rows + kBlock, 0.0f);
}

// P = exp(S - lse) and scale * dS = scale * P * (dP - delta) for one score.
struct SoftmaxGrad {
  float p, ds;
};
inline SoftmaxGrad softmax_grad(float score, float dp, float row_lse, float row_delta, float scale) {
  const float p = exp_nonpositive(score - row_lse);  // score <= lse up to rounding
  return {p, scale * p * (dp - row_delta)};
}

// dq for one (batch, head, query block): dq += scale * dS K over key blocks,
// with tiles in [key x query] orientation.
template <class T>
void backward_dq_block(const Geometry& g, Scratch& w, int64_t b, int64_t h, int64_t q_block, const float* q,
                       const float* k, const float* v, const float* out, const float* lse, const float* dout,
                       float* dq) {
  const int64_t q0 = q_block * kBlock;
  const int64_t nq = g.block_len(q_block);
  const int64_t kv_head = h / g.group;
  float* delta = w.row_a.data();
  float* lse_rows = w.row_b.data();
  float* acc = w.acc_qk.data();
  float* st = w.scores.data();
  float* dst = w.dscores.data();
  row_statistics(g, b, h, q0, nq, out, dout, lse, delta, lse_rows);
  transpose_block(q + g.q_at(b, h, q0), g.q_stride(), nq, g.qk_dim, g.scale, w.qk_t.data());
  transpose_block(dout + g.o_at(b, h, q0), g.o_stride(), nq, g.v_dim, 1.0f, w.v_t.data());
  std::fill(acc, acc + nq * g.qk_dim, 0.0f);

  const int64_t last_query = q0 + nq - 1;
  for (int64_t k0 = 0; k0 <= last_query; k0 += kBlock) {
    const int64_t nk = std::min(kBlock, last_query + 1 - k0);
    const float* k_tile = k + g.k_at(b, kv_head, k0);
    T::tile_product(nk, kBlock, g.qk_dim, k_tile, g.k_stride(), 1, w.qk_t.data(), kBlock, st, kBlock, false);
    T::tile_product(nk, kBlock, g.v_dim, v + g.v_at(b, kv_head, k0), g.v_stride(), 1, w.v_t.data(), kBlock, dst,
                 kBlock, false);
    for (int64_t j = 0; j < nk; ++j) {
      float* s_row = st + j * kBlock;
      float* ds_row = dst + j * kBlock;
      for (int64_t i = 0; i < kBlock; ++i) {
        const SoftmaxGrad r = softmax_grad(s_row[i], ds_row[i], lse_rows[i], delta[i], g.scale);
        ds_row[i] = r.ds;
      }
      std::fill(ds_row, ds_row + first_visible_query(q0, k0, j), 0.0f);
    }
    T::tile_product(nq, g.qk_dim, nk, dst, 1, kBlock, k_tile, g.k_stride(), acc, g.qk_dim, true);
  }
  for (int64_t i = 0; i < nq; ++i) {
    float* dq_row = dq + g.q_at(b, h, q0 + i);
    const float* acc_row = acc + i * g.qk_dim;
    for (int64_t d = 0; d < g.qk_dim; ++d) dq_row[d] += acc_row[d];
  }
}

// dk and dv for one (batch, kv head, key block), summed over every query
// head of the group and every query block at or after the key block, so no
// two tasks write the same rows. Tiles in [query x key] orientation.
template <class T>
void backward_dkv_block(const Geometry& g, Scratch& w, int64_t b, int64_t kv_head, int64_t k_block,
                        const float* q, const float* k, const float* v, const float* out, const float* lse,
                        const float* dout, float* dk, float* dv) {
  const int64_t k0 = k_block * kBlock;
  const int64_t nk = g.block_len(k_block);
  float* delta = w.row_a.data();
  float* lse_rows = w.row_b.data();
  float* acc_k = w.acc_qk.data();
  float* acc_v = w.acc_v.data();
  float* s = w.scores.data();
  float* ds = w.dscores.data();
  std::fill(acc_k, acc_k + nk * g.qk_dim, 0.0f);
  std::fill(acc_v, acc_v + nk * g.v_dim, 0.0f);
  transpose_block(k + g.k_at(b, kv_head, k0), g.k_stride(), nk, g.qk_dim, g.scale, w.qk_t.data());
  transpose_block(v + g.v_at(b, kv_head, k0), g.v_stride(), nk, g.v_dim, 1.0f, w.v_t.data());

  for (int64_t h = kv_head * g.group; h < (kv_head + 1) * g.group; ++h) {
    for (int64_t q_block = k_block; q_block < g.n_blocks; ++q_block) {  // earlier queries are masked
      const int64_t q0 = q_block * kBlock;
      const int64_t nq = g.block_len(q_block);
      const float* q_tile = q + g.q_at(b, h, q0);
      const float* do_tile = dout + g.o_at(b, h, q0);
      row_statistics(g, b, h, q0, nq, out, dout, lse, delta, lse_rows);
      T::tile_product(nq, kBlock, g.qk_dim, q_tile, g.q_stride(), 1, w.qk_t.data(), kBlock, s, kBlock, false);
      T::tile_product(nq, kBlock, g.v_dim, do_tile, g.o_stride(), 1, w.v_t.data(), kBlock, ds, kBlock, false);
      for (int64_t i = 0; i < nq; ++i) {
        float* s_row = s + i * kBlock;
        float* ds_row = ds + i * kBlock;
        const int64_t visible = visible_keys(q0 + i, k0, nk);
        for (int64_t j = 0; j < visible; ++j) {
          const SoftmaxGrad r = softmax_grad(s_row[j], ds_row[j], lse_rows[i], delta[i], g.scale);
          s_row[j] = r.p;
          ds_row[j] = r.ds;
        }
        std::fill(s_row + visible, s_row + nk, 0.0f);
        std::fill(ds_row + visible, ds_row + nk, 0.0f);
      }
      // Transposed reads of P and dS: element (j, i) sits at i * kBlock + j.
      T::tile_product(nk, g.v_dim, nq, s, 1, kBlock, do_tile, g.o_stride(), acc_v, g.v_dim, true);
      T::tile_product(nk, g.qk_dim, nq, ds, 1, kBlock, q_tile, g.q_stride(), acc_k, g.qk_dim, true);
    }
  }
  for (int64_t j = 0; j < nk; ++j) {
    float* dk_row = dk + g.k_at(b, kv_head, k0 + j);
    float* dv_row = dv + g.v_at(b, kv_head, k0 + j);
    for (int64_t d = 0; d < g.qk_dim; ++d) dk_row[d] += acc_k[j * g.qk_dim + d];
    for (int64_t d = 0; d < g.v_dim; ++d) dv_row[d] += acc_v[j * g.v_dim + d];
  }
}

// The three block kernels at one vector width.
struct BlockKernels {
  void (*forward)(const Geometry&, Scratch&, int64_t, int64_t, int64_t, const float*, const float*, const float*,
                  float*, float*);
  void (*dq)(const Geometry&, Scratch&, int64_t, int64_t, int64_t, const float*, const float*, const float*,
             const float*, const float*, const float*, float*);
  void (*dkv)(const Geometry&, Scratch&, int64_t, int64_t, int64_t, const float*, const float*, const float*,
              const float*, const float*, const float*, float*, float*);
};

using BuildTiles = attention_tiles::Tiles<attention_tiles::kBuildLanes>;
constexpr BlockKernels kBuildKernels = {&forward_query_block<BuildTiles>, &backward_dq_block<BuildTiles>,
                                        &backward_dkv_block<BuildTiles>};

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__AVX512F__)
// AVX-512 versions for a portable build, chosen at run time: each wrapper is
// compiled for AVX-512 and inlines (flatten) the whole block kernel at 16
// lanes into itself, so no AVX-512 instruction runs outside them.
#define MEMOE_AVX512_KERNEL __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma"), flatten))
// Compiled only inside the AVX-512 functions below, so a row of B may be
// pinned to a 512-bit register; clang checks that operand against the
// template's own (AVX2) target before inlining, so there it goes without.
#if defined(__clang__)
using Avx512Tiles = attention_tiles::Tiles<16, false>;
#else
using Avx512Tiles = attention_tiles::Tiles<16, true>;
#endif
MEMOE_AVX512_KERNEL void forward_avx512(const Geometry& g, Scratch& w, int64_t b, int64_t h, int64_t q_block,
                                        const float* q, const float* k, const float* v, float* out, float* lse) {
  forward_query_block<Avx512Tiles>(g, w, b, h, q_block, q, k, v, out, lse);
}
MEMOE_AVX512_KERNEL void dq_avx512(const Geometry& g, Scratch& w, int64_t b, int64_t h, int64_t q_block,
                                   const float* q, const float* k, const float* v, const float* out,
                                   const float* lse, const float* dout, float* dq) {
  backward_dq_block<Avx512Tiles>(g, w, b, h, q_block, q, k, v, out, lse, dout, dq);
}
MEMOE_AVX512_KERNEL void dkv_avx512(const Geometry& g, Scratch& w, int64_t b, int64_t kv_head, int64_t k_block,
                                    const float* q, const float* k, const float* v, const float* out,
                                    const float* lse, const float* dout, float* dk, float* dv) {
  backward_dkv_block<Avx512Tiles>(g, w, b, kv_head, k_block, q, k, v, out, lse, dout, dk, dv);
}
const BlockKernels& kernels() {
  static const BlockKernels chosen = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                                             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq")
                                         ? BlockKernels{&forward_avx512, &dq_avx512, &dkv_avx512}
                                         : kBuildKernels;
  return chosen;
}
#else
const BlockKernels& kernels() { return kBuildKernels; }
#endif

}  // namespace

void attention_forward(const AttentionShape& s, const float* q, const float* k, const float* v, float* out,
                       float* lse) {
  validate(s);
  if (s.batch == 0 || s.seq_len == 0) return;
  require_pointer(q, "q");
  require_pointer(k, "k");
  require_pointer(v, "v");
  require_pointer(out, "out");
  require_pointer(lse, "lse");
  const Geometry g(s);
  const BlockKernels& run = kernels();
  const int64_t n_tasks = s.batch * s.n_heads * g.n_blocks;
#pragma omp parallel if (worth_threads(s))
  {
    Scratch w(g);
    // Later query blocks see more keys; hand them out first for balance.
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < n_tasks; ++task) {
      const int64_t q_block = g.n_blocks - 1 - task % g.n_blocks;
      const int64_t bh = task / g.n_blocks;
      run.forward(g, w, bh / s.n_heads, bh % s.n_heads, q_block, q, k, v, out, lse);
    }
  }
}

void attention_backward(const AttentionShape& s, const float* q, const float* k, const float* v,
                        const float* out, const float* lse, const float* dout, float* dq, float* dk,
                        float* dv) {
  validate(s);
  if (s.batch == 0 || s.seq_len == 0) return;
  require_pointer(q, "q");
  require_pointer(k, "k");
  require_pointer(v, "v");
  require_pointer(out, "out");
  require_pointer(lse, "lse");
  require_pointer(dout, "dout");
  require_pointer(dq, "dq");
  require_pointer(dk, "dk");
  require_pointer(dv, "dv");
  const Geometry g(s);
  const BlockKernels& run = kernels();
  const int64_t n_dq_tasks = s.batch * s.n_heads * g.n_blocks;
  const int64_t n_dkv_tasks = s.batch * s.n_kv_heads * g.n_blocks;
  // Two passes, each writing disjoint rows: dq by query block, then dk/dv by
  // key block. Probabilities are recomputed from lse in both.
#pragma omp parallel if (worth_threads(s))
  {
    Scratch w(g);
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < n_dq_tasks; ++task) {
      const int64_t q_block = g.n_blocks - 1 - task % g.n_blocks;  // heaviest first
      const int64_t bh = task / g.n_blocks;
      run.dq(g, w, bh / s.n_heads, bh % s.n_heads, q_block, q, k, v, out, lse, dout, dq);
    }
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < n_dkv_tasks; ++task) {
      const int64_t k_block = task % g.n_blocks;  // early key blocks meet the most queries
      const int64_t bg = task / g.n_blocks;
      run.dkv(g, w, bg / s.n_kv_heads, bg % s.n_kv_heads, k_block, q, k, v, out, lse, dout, dk, dv);
    }
  }
}

}  // namespace memoe
