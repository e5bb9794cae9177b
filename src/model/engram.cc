#include "model/engram.h"

#include <algorithm>
#include <numeric>

#include "core/error.h"
#include "kernels/activation.h"
#include "kernels/elementwise.h"
#include "kernels/engram_gate.h"
#include "kernels/linear.h"
#include "kernels/norm.h"
#include "kernels/short_conv.h"

namespace memoe {

namespace {
constexpr float kGateNormEps = 1.1920929e-07f;  // float32 epsilon (spec §5.3)
constexpr float kConvNormEps = 1e-5f;           // spec §5.4
}  // namespace

int64_t EngramHash::table_rows() const { return std::accumulate(primes.begin(), primes.end(), int64_t{0}); }

void EngramParams::allocate(const ModelConfig& cfg, int64_t table_rows, bool with_table) {
  const EngramConfig& e = *cfg.engram;
  const int64_t d = cfg.hidden_size, E = e.embed_dim();
  if (with_table) {
    embedding.resize({table_rows, e.head_dim()});
    embedding.advise_huge_pages();  // rows are read at random: fewer TLB misses
  }
  embedding_grad.row_width = e.head_dim();
  value_proj.resize({d, E});
  value_bias.resize({d});
  key_proj.resize({d, E});
  key_bias.resize({d});
  norm1.resize({d});
  norm2.resize({d});
  conv_weight.resize({d, 1, e.kernel_size});
  conv_norm.resize({d});
}

void EngramParams::visit(const std::string& prefix, const ParamVisitor& f) {
  using namespace param_role;
  if (!embedding.empty()) f(prefix + "embedding.weight", embedding, kEngramTable);
  f(prefix + "value_proj.weight", value_proj, kMatrix);
  f(prefix + "value_proj.bias", value_bias, kBias);
  f(prefix + "key_projs.0.weight", key_proj, kMatrix);
  f(prefix + "key_projs.0.bias", key_bias, kBias);
  f(prefix + "norm1.0.weight", norm1, kNormScale);
  f(prefix + "norm2.0.weight", norm2, kNormScale);
  f(prefix + "short_conv.conv.weight", conv_weight, kShortConv);
  f(prefix + "short_conv.norms.0.weight", conv_norm, kNormScale);
}

void EngramParams::visit_sparse_grads(const std::string& prefix, const SparseRowGradVisitor& f) {
  f(prefix + "embedding.weight", embedding_grad);
}

namespace {
// Everything after the hash: gather, gate, value, short conv. With states
// (one per sequence of the batch), the conv of each also sees its state's
// earlier inputs and moves them on.
void engram_from_rows(const ModelConfig& cfg, const EngramParams& p, const Tensor& table, const float* h,
                      int64_t batch, int64_t seq_len, EngramCache& c, const std::vector<EngramDecodeState*>* states,
                      float* out) {
  const EngramConfig& ec = *cfg.engram;
  const int64_t N = batch * seq_len, d = cfg.hidden_size, E = ec.embed_dim(), T = ec.tables_per_layer();
  const int64_t D = ec.head_dim();
  c.e.ensure({N, E});
  engram_gather(table, D, c.rows.data(), N, T, c.e.data());

  // Gate: alpha = sigmoid(signed_sqrt(<norm1(key), norm2(h)> / sqrt(d))).
  c.key_pre.ensure({N, d});
  c.key.ensure({N, d});
  c.key_rstd.ensure({N});
  c.query.ensure({N, d});
  c.query_rstd.ensure({N});
  linear_forward(c.e.data(), p.key_proj, p.key_bias.data(), N, E, d, c.key_pre.data());
  rmsnorm_forward(c.key_pre.data(), p.norm1.data(), kGateNormEps, N, d, c.key.data(), c.key_rstd.data());
  rmsnorm_forward(h, p.norm2.data(), kGateNormEps, N, d, c.query.data(), c.query_rstd.data());
  c.gate_score.ensure({N});
  c.alpha.ensure({N});
  engram_gate_forward(c.key.data(), c.query.data(), N, d, c.gate_score.data(), c.alpha.data());

  c.value.ensure({N, d});
  c.u.ensure({N, d});
  linear_forward(c.e.data(), p.value_proj, p.value_bias.data(), N, E, d, c.value.data());
  scale_rows(c.value.data(), c.alpha.data(), N, d, c.u.data());

  // Short conv: out = u + silu(conv(RMSNorm(u))).
  c.conv_in.ensure({N, d});
  c.conv_rstd.ensure({N});
  c.conv_z.ensure({N, d});
  rmsnorm_forward(c.u.data(), p.conv_norm.data(), kConvNormEps, N, d, c.conv_in.data(), c.conv_rstd.data());
  if (!states) {
    short_conv_forward(c.conv_in.data(), p.conv_weight.data(), batch, seq_len, d, ec.kernel_size, ec.max_ngram_size,
                       c.conv_z.data());
  } else {
    // Per sequence, the conv over [history; new inputs], keeping the new
    // positions' outputs.
    const int64_t past = int64_t(ec.kernel_size - 1) * ec.max_ngram_size;
    std::vector<float> window(size_t((past + seq_len) * d)), z(size_t((past + seq_len) * d));
    for (int64_t b = 0; b < batch; ++b) {
      std::vector<float>& hist = (*states)[size_t(b)]->conv_history;
      if (int64_t(hist.size()) != past * d) hist.assign(size_t(past * d), 0.0f);
      std::copy(hist.begin(), hist.end(), window.begin());
      const float* in = c.conv_in.data() + b * seq_len * d;
      std::copy(in, in + seq_len * d, window.begin() + long(past * d));
      short_conv_forward(window.data(), p.conv_weight.data(), 1, past + seq_len, d, ec.kernel_size,
                         ec.max_ngram_size, z.data());
      std::copy(z.begin() + long(past * d), z.end(), c.conv_z.data() + b * seq_len * d);
      std::copy(window.end() - long(past * d), window.end(), hist.begin());
    }
  }
  silu_forward(c.conv_z.data(), N * d, out);
  add_into(out, c.u.data(), N * d);
}
}  // namespace

std::vector<int64_t> engram_rows_of(const ModelConfig& cfg, const EngramHash& hash, const int64_t* compressed_ids,
                                    int64_t batch, int64_t seq_len) {
  const EngramConfig& ec = *cfg.engram;
  std::vector<int64_t> rows(size_t(batch * seq_len * ec.tables_per_layer()));
  engram_hash_rows(compressed_ids, batch, seq_len, hash.compressed_pad, hash.multipliers.data(),
                   ec.max_ngram_size, hash.primes.data(), ec.n_head_per_ngram, rows.data());
  return rows;
}

void engram_forward(const ModelConfig& cfg, const EngramHash& hash, const EngramParams& p, const float* h,
                    const int64_t* compressed_ids, int64_t batch, int64_t seq_len, EngramCache& c, float* out,
                    EngramRowSource* source, int layer) {
  // Hash and gather: rows depend on the ids alone.
  c.rows = engram_rows_of(cfg, hash, compressed_ids, batch, seq_len);
  c.held_rows.clear();
  const Tensor& table = source ? source->fetch(layer, p, c.rows, c.held_rows) : p.embedding;
  engram_from_rows(cfg, p, table, h, batch, seq_len, c, nullptr, out);
}

void engram_cached(const ModelConfig& cfg, const EngramHash& hash, const EngramParams& p, const float* h,
                   const int64_t* window_ids, int64_t n, const std::vector<EngramDecodeState*>& states, float* out) {
  EngramCache c;
  c.rows = engram_window_rows(cfg, hash, window_ids, int64_t(states.size()), n);
  engram_from_rows(cfg, p, p.embedding, h, int64_t(states.size()), n, c, &states, out);
}

std::vector<int64_t> engram_window_rows(const ModelConfig& cfg, const EngramHash& hash, const int64_t* window_ids,
                                        int64_t sequences, int64_t n) {
  const EngramConfig& ec = *cfg.engram;
  const int64_t T = ec.tables_per_layer(), before = ec.max_ngram_size - 1, S = sequences;
  // Hash each window as a sequence and keep its last n positions: their
  // n-grams reach back at most N-1 positions, all inside the window.
  std::vector<int64_t> rows(size_t(S * (before + n) * T)), kept;
  engram_hash_rows(window_ids, S, before + n, hash.compressed_pad, hash.multipliers.data(), ec.max_ngram_size,
                   hash.primes.data(), ec.n_head_per_ngram, rows.data());
  kept.reserve(size_t(S * n * T));
  for (int64_t s = 0; s < S; ++s) {
    const auto window = rows.begin() + long(s * (before + n) * T);
    kept.insert(kept.end(), window + long(before * T), window + long((before + n) * T));
  }
  return kept;
}

MemoryRange engram_row_memory(const EngramParams& p, int64_t row) {
  const int64_t D = p.embedding.dim(1);
  if (p.embedding.has_f32()) return {p.embedding.data() + row * D, sizeof(float) * size_t(D)};
  return {p.embedding.bf16() + row * D, sizeof(uint16_t) * size_t(D)};
}

void engram_backward(const ModelConfig& cfg, const EngramParams& p, const float* h, const EngramCache& c,
                     const float* dout, int64_t batch, int64_t seq_len, EngramParams& grads, float* dh) {
  const EngramConfig& ec = *cfg.engram;
  const int64_t N = batch * seq_len, d = cfg.hidden_size, E = ec.embed_dim(), T = ec.tables_per_layer();
  const int64_t D = ec.head_dim();

  // Through the conv branch back to u (u also feeds out directly).
  Tensor dz({N, d}), dconv_in({N, d}), du({N, d});
  silu_backward(dout, c.conv_z.data(), N * d, dz.data());
  short_conv_backward(dz.data(), c.conv_in.data(), p.conv_weight.data(), batch, seq_len, d, ec.kernel_size,
                      ec.max_ngram_size, dconv_in.data(), grads.conv_weight.data());
  std::copy(dout, dout + N * d, du.data());
  rmsnorm_backward(dconv_in.data(), c.u.data(), p.conv_norm.data(), c.conv_rstd.data(), N, d, du.data(),
                   grads.conv_norm.data());

  // u = alpha * value.
  Tensor dvalue({N, d}), dkey({N, d}), dquery({N, d}), dkey_pre({N, d}), de({N, E});
  engram_gate_backward(du.data(), c.value.data(), c.key.data(), c.query.data(), c.gate_score.data(), c.alpha.data(),
                       N, d, dvalue.data(), dkey.data(), dquery.data());
  linear_backward(dvalue.data(), c.e.data(), p.value_proj, N, E, d, de.data(), grads.value_proj.data(),
                  grads.value_bias.data());
  rmsnorm_backward(dkey.data(), c.key_pre.data(), p.norm1.data(), c.key_rstd.data(), N, d, dkey_pre.data(),
                   grads.norm1.data());
  linear_backward(dkey_pre.data(), c.e.data(), p.key_proj, N, E, d, de.data(), grads.key_proj.data(),
                  grads.key_bias.data());
  rmsnorm_backward(dquery.data(), h, p.norm2.data(), c.query_rstd.data(), N, d, dh, grads.norm2.data());
  if (c.held_rows.empty()) {
    engram_gather_backward(de.data(), c.rows.data(), N, T, D, &grads.embedding_grad);
    return;
  }
  // Rows of a fetched table: its gradient rows renamed to their global ids
  // (ascending to ascending, so the order and the sums are the same).
  MEMOE_CHECK(grads.embedding_grad.rows.empty(), "engram backward: a fetched table's gradient must start empty");
  SparseRowGrad g;
  engram_gather_backward(de.data(), c.rows.data(), N, T, D, &g);
  for (int64_t& r : g.rows) r = c.held_rows.at(size_t(r));
  grads.embedding_grad.rows = std::move(g.rows);
  grads.embedding_grad.grad = std::move(g.grad);
  grads.embedding_grad.row_width = g.row_width;
}

}  // namespace memoe
