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
using attention_tiles::tile_product;

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
  int64_t v_at(int64_t b, int64_t g, int64_t t) const {
    return ((b * seq_len + t) * n_kv_heads + g) * v_dim;
  }
  int64_t o_at(int64_t b, int64_t h, int64_t t) const { return ((b * seq_len + t) * n_heads + h) * v_dim; }
  int64_t lse_at(int64_t b, int64_t h, int64_t t) const { return (b * n_heads + h) * seq_len + t; }

  int64_t block_len(int64_t block) const { return std::min(kBlock, seq_len - block * kBlock); }
};

void validate(const AttentionShape& s) {
  MEMOE_CHECK(s.batch >= 0 && s.seq_len >= 0, "attention: batch and seq_len must be >= 0, got batch=",
              s.batch, " seq_len=", s.seq_len);
  MEMOE_CHECK(s.n_heads > 0 && s.n_kv_heads > 0, "attention: head counts must be positive, got n_heads=",
              s.n_heads, " n_kv_heads=", s.n_kv_heads);
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

// Number of keys of the block starting at key_begin (length n_keys) that
// query position q_pos may see under the causal mask.
int64_t visible_keys(int64_t q_pos, int64_t key_begin, int64_t n_keys) {
  return std::clamp<int64_t>(q_pos - key_begin + 1, 0, n_keys);
}

// dst[d * kBlock + j] = src[j * ld + d] for j < n; columns n..kBlock-1 are
// zeroed so score tiles can always be computed kBlock wide.
void transpose_block(const float* src, int64_t ld, int64_t n, int64_t dim, float* dst) {
  for (int64_t d = 0; d < dim; ++d) std::fill(dst + d * kBlock + n, dst + (d + 1) * kBlock, 0.0f);
  for (int64_t j = 0; j < n; ++j)
    for (int64_t d = 0; d < dim; ++d) dst[d * kBlock + j] = src[j * ld + d];
}

// Per-thread tiles. Sized once per parallel region; nothing scales with L.
struct Scratch {
  explicit Scratch(const Geometry& g)
      : k_t(g.qk_dim * kBlock),
        v_t(g.v_dim * kBlock),
        scores(kBlock * kBlock),
        dscores(kBlock * kBlock),
        acc_qk(kBlock * g.qk_dim),
        acc_v(kBlock * g.v_dim),
        row_a(kBlock),
        row_b(kBlock) {}
  std::vector<float> k_t, v_t;       // transposed K and V tiles [D x kBlock]
  std::vector<float> scores, dscores;  // [kBlock x kBlock]: S then P; dP then dS
  std::vector<float> acc_qk, acc_v;  // accumulators [kBlock x Dqk], [kBlock x Dv]
  std::vector<float> row_a, row_b;   // per query row statistics
};

// One (batch, head, query block): stream over key blocks keeping a running
// row max m and row sum l, rescaling the output accumulator as m grows.
void forward_query_block(const Geometry& g, Scratch& w, int64_t b, int64_t h, int64_t q_block,
                         const float* q, const float* k, const float* v, float* out, float* lse) {
  const int64_t q0 = q_block * kBlock;
  const int64_t nq = g.block_len(q_block);
  const int64_t kv_head = h / g.group;
  const float* q_tile = q + g.q_at(b, h, q0);
  float* acc = w.acc_v.data();  // unnormalised output [nq x Dv]
  float* row_max = w.row_a.data();
  float* row_sum = w.row_b.data();
  std::fill(acc, acc + nq * g.v_dim, 0.0f);
  std::fill(row_max, row_max + nq, -std::numeric_limits<float>::infinity());
  std::fill(row_sum, row_sum + nq, 0.0f);

  const int64_t last_query = q0 + nq - 1;
  for (int64_t k0 = 0; k0 <= last_query; k0 += kBlock) {  // blocks past the diagonal are fully masked
    const int64_t nk = std::min(kBlock, last_query + 1 - k0);
    transpose_block(k + g.k_at(b, kv_head, k0), g.k_stride(), nk, g.qk_dim, w.k_t.data());
    float* s = w.scores.data();
    tile_product(nq, kBlock, g.qk_dim, q_tile, g.q_stride(), 1, w.k_t.data(), kBlock, s, kBlock, false);

    for (int64_t i = 0; i < nq; ++i) {
      float* row = s + i * kBlock;
      const int64_t visible = visible_keys(q0 + i, k0, nk);
      float block_max = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j < visible; ++j) {
        row[j] *= g.scale;
        block_max = std::max(block_max, row[j]);
      }
      const float new_max = std::max(row_max[i], block_max);
      float block_sum = 0.0f;
      for (int64_t j = 0; j < visible; ++j) {
        row[j] = exp_nonpositive(row[j] - new_max);
        block_sum += row[j];
      }
      std::fill(row + visible, row + nk, 0.0f);  // masked keys contribute nothing to P V
      if (visible == 0) continue;
      const float rescale = exp_nonpositive(row_max[i] - new_max);  // 0 on the first block
      row_sum[i] = row_sum[i] * rescale + block_sum;
      row_max[i] = new_max;
      if (rescale != 1.0f) {
        float* acc_row = acc + i * g.v_dim;
        for (int64_t d = 0; d < g.v_dim; ++d) acc_row[d] *= rescale;
      }
    }
    tile_product(nq, g.v_dim, nk, s, kBlock, 1, v + g.v_at(b, kv_head, k0), g.v_stride(), acc, g.v_dim,
                 true);
  }

  for (int64_t i = 0; i < nq; ++i) {
    const float inv_sum = 1.0f / row_sum[i];  // >= 1: every query sees at least key 0
    const float* acc_row = acc + i * g.v_dim;
    float* out_row = out + g.o_at(b, h, q0 + i);
    for (int64_t d = 0; d < g.v_dim; ++d) out_row[d] = acc_row[d] * inv_sum;
    lse[g.lse_at(b, h, q0 + i)] = row_max[i] + std::log(row_sum[i]);
  }
}

// delta[i] = sum_d dout[i, d] * out[i, d] for the nq rows of a query block:
// the row term of the softmax backward (dS = P * (dP - delta)).
void row_deltas(const Geometry& g, int64_t b, int64_t h, int64_t q0, int64_t nq, const float* out,
                const float* dout, float* delta) {
  for (int64_t i = 0; i < nq; ++i) {
    const float* o_row = out + g.o_at(b, h, q0 + i);
    const float* do_row = dout + g.o_at(b, h, q0 + i);
    float sum = 0.0f;
    for (int64_t d = 0; d < g.v_dim; ++d) sum += o_row[d] * do_row[d];
    delta[i] = sum;
  }
}

// For one (query block, key block) tile whose K^T and V^T are in w.k_t and
// w.v_t: recomputes P from lse into w.scores and leaves scale * dS in
// w.dscores. Masked entries are 0 in both.
void tile_probabilities_and_dscores(const Geometry& g, Scratch& w, int64_t b, int64_t h, int64_t q0,
                                    int64_t nq, int64_t k0, int64_t nk, const float* q, const float* lse,
                                    const float* dout, const float* delta) {
  float* p = w.scores.data();
  float* ds = w.dscores.data();
  tile_product(nq, kBlock, g.qk_dim, q + g.q_at(b, h, q0), g.q_stride(), 1, w.k_t.data(), kBlock, p,
               kBlock, false);
  tile_product(nq, kBlock, g.v_dim, dout + g.o_at(b, h, q0), g.o_stride(), 1, w.v_t.data(), kBlock, ds,
               kBlock, false);
  for (int64_t i = 0; i < nq; ++i) {
    float* p_row = p + i * kBlock;
    float* ds_row = ds + i * kBlock;
    const int64_t visible = visible_keys(q0 + i, k0, nk);
    const float row_lse = lse[g.lse_at(b, h, q0 + i)];
    for (int64_t j = 0; j < visible; ++j) {
      // Scores never exceed the row's lse, so clamp rounding noise above 0.
      p_row[j] = exp_nonpositive(std::min(p_row[j] * g.scale - row_lse, 0.0f));
      ds_row[j] = g.scale * p_row[j] * (ds_row[j] - delta[i]);
    }
    std::fill(p_row + visible, p_row + kBlock, 0.0f);
    std::fill(ds_row + visible, ds_row + kBlock, 0.0f);
  }
}

// dq for one (batch, head, query block): dq += scale * dS K over key blocks.
void backward_dq_block(const Geometry& g, Scratch& w, int64_t b, int64_t h, int64_t q_block,
                       const float* q, const float* k, const float* v, const float* out,
                       const float* lse, const float* dout, float* dq) {
  const int64_t q0 = q_block * kBlock;
  const int64_t nq = g.block_len(q_block);
  const int64_t kv_head = h / g.group;
  float* delta = w.row_a.data();
  float* acc = w.acc_qk.data();
  row_deltas(g, b, h, q0, nq, out, dout, delta);
  std::fill(acc, acc + nq * g.qk_dim, 0.0f);

  const int64_t last_query = q0 + nq - 1;
  for (int64_t k0 = 0; k0 <= last_query; k0 += kBlock) {
    const int64_t nk = std::min(kBlock, last_query + 1 - k0);
    const float* k_tile = k + g.k_at(b, kv_head, k0);
    transpose_block(k_tile, g.k_stride(), nk, g.qk_dim, w.k_t.data());
    transpose_block(v + g.v_at(b, kv_head, k0), g.v_stride(), nk, g.v_dim, w.v_t.data());
    tile_probabilities_and_dscores(g, w, b, h, q0, nq, k0, nk, q, lse, dout, delta);
    tile_product(nq, g.qk_dim, nk, w.dscores.data(), kBlock, 1, k_tile, g.k_stride(), acc, g.qk_dim, true);
  }
  for (int64_t i = 0; i < nq; ++i) {
    float* dq_row = dq + g.q_at(b, h, q0 + i);
    const float* acc_row = acc + i * g.qk_dim;
    for (int64_t d = 0; d < g.qk_dim; ++d) dq_row[d] += acc_row[d];
  }
}

// dk and dv for one (batch, kv head, key block), summed over every query
// head of the group and every query block at or after the key block, so no
// two tasks write the same rows.
void backward_dkv_block(const Geometry& g, Scratch& w, int64_t b, int64_t kv_head, int64_t k_block,
                        const float* q, const float* k, const float* v, const float* out,
                        const float* lse, const float* dout, float* dk, float* dv) {
  const int64_t k0 = k_block * kBlock;
  const int64_t nk = g.block_len(k_block);
  float* delta = w.row_a.data();
  float* acc_k = w.acc_qk.data();
  float* acc_v = w.acc_v.data();
  std::fill(acc_k, acc_k + nk * g.qk_dim, 0.0f);
  std::fill(acc_v, acc_v + nk * g.v_dim, 0.0f);
  transpose_block(k + g.k_at(b, kv_head, k0), g.k_stride(), nk, g.qk_dim, w.k_t.data());
  transpose_block(v + g.v_at(b, kv_head, k0), g.v_stride(), nk, g.v_dim, w.v_t.data());

  for (int64_t h = kv_head * g.group; h < (kv_head + 1) * g.group; ++h) {
    for (int64_t q_block = k_block; q_block < g.n_blocks; ++q_block) {  // earlier queries are masked
      const int64_t q0 = q_block * kBlock;
      const int64_t nq = g.block_len(q_block);
      row_deltas(g, b, h, q0, nq, out, dout, delta);
      tile_probabilities_and_dscores(g, w, b, h, q0, nq, k0, nk, q, lse, dout, delta);
      // Transposed reads of P and dS: element (j, i) sits at i * kBlock + j.
      tile_product(nk, g.v_dim, nq, w.scores.data(), 1, kBlock, dout + g.o_at(b, h, q0), g.o_stride(),
                   acc_v, g.v_dim, true);
      tile_product(nk, g.qk_dim, nq, w.dscores.data(), 1, kBlock, q + g.q_at(b, h, q0), g.q_stride(),
                   acc_k, g.qk_dim, true);
    }
  }
  for (int64_t j = 0; j < nk; ++j) {
    float* dk_row = dk + g.k_at(b, kv_head, k0 + j);
    float* dv_row = dv + g.v_at(b, kv_head, k0 + j);
    for (int64_t d = 0; d < g.qk_dim; ++d) dk_row[d] += acc_k[j * g.qk_dim + d];
    for (int64_t d = 0; d < g.v_dim; ++d) dv_row[d] += acc_v[j * g.v_dim + d];
  }
}

}  // namespace

void attention_forward(const AttentionShape& s, const float* q, const float* k, const float* v,
                       float* out, float* lse) {
  validate(s);
  if (s.batch == 0 || s.seq_len == 0) return;
  require_pointer(q, "q");
  require_pointer(k, "k");
  require_pointer(v, "v");
  require_pointer(out, "out");
  require_pointer(lse, "lse");
  const Geometry g(s);
  const int64_t n_tasks = s.batch * s.n_heads * g.n_blocks;
#pragma omp parallel if (worth_threads(s))
  {
    Scratch w(g);
    // Later query blocks see more keys; hand them out first for balance.
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < n_tasks; ++task) {
      const int64_t q_block = g.n_blocks - 1 - task % g.n_blocks;
      const int64_t bh = task / g.n_blocks;
      forward_query_block(g, w, bh / s.n_heads, bh % s.n_heads, q_block, q, k, v, out, lse);
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
      backward_dq_block(g, w, bh / s.n_heads, bh % s.n_heads, q_block, q, k, v, out, lse, dout, dq);
    }
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < n_dkv_tasks; ++task) {
      const int64_t k_block = task % g.n_blocks;  // early key blocks meet the most queries
      const int64_t bg = task / g.n_blocks;
      backward_dkv_block(g, w, bg / s.n_kv_heads, bg % s.n_kv_heads, k_block, q, k, v, out, lse, dout, dk,
                         dv);
    }
  }
}

}  // namespace memoe
