#include "model/engram.h"

#include <cmath>
#include <numeric>

#include "kernels/activation.h"
#include "kernels/linear.h"
#include "kernels/norm.h"
#include "kernels/short_conv.h"

namespace memoe {

namespace {
constexpr float kGateNormEps = 1.1920929e-07f;  // float32 epsilon (spec §5.3)
constexpr float kConvNormEps = 1e-5f;           // spec §5.4
constexpr float kGateFloor = 1e-6f;             // |s| floor under the signed square root
}  // namespace

int64_t EngramHash::table_rows() const { return std::accumulate(primes.begin(), primes.end(), int64_t{0}); }

void EngramParams::allocate(const ModelConfig& cfg, int64_t table_rows, bool with_table) {
  const EngramConfig& e = *cfg.engram;
  const int64_t d = cfg.hidden_size, E = e.embed_dim();
  if (with_table) embedding.resize({table_rows, e.head_dim()});
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

void engram_forward(const ModelConfig& cfg, const EngramHash& hash, const EngramParams& p, const float* h,
                    const int64_t* compressed_ids, int64_t batch, int64_t seq_len, EngramCache& c, float* out) {
  const EngramConfig& ec = *cfg.engram;
  const int64_t N = batch * seq_len, d = cfg.hidden_size, E = ec.embed_dim(), T = ec.tables_per_layer();
  const int64_t D = ec.head_dim();

  // Hash and gather: rows depend on the ids alone.
  c.rows.resize(size_t(N * T));
  engram_hash_rows(compressed_ids, batch, seq_len, hash.compressed_pad, hash.multipliers.data(),
                   ec.max_ngram_size, hash.primes.data(), ec.n_head_per_ngram, c.rows.data());
  c.e.ensure({N, E});
  engram_gather(p.embedding.data(), D, c.rows.data(), N, T, c.e.data());

  // Gate: alpha = sigmoid(signed_sqrt(<norm1(key), norm2(h)> / sqrt(d))).
  c.key_pre.ensure({N, d});
  c.key.ensure({N, d});
  c.key_rstd.ensure({N});
  c.query.ensure({N, d});
  c.query_rstd.ensure({N});
  linear_forward(c.e.data(), p.key_proj.data(), p.key_bias.data(), N, E, d, c.key_pre.data());
  rmsnorm_forward(c.key_pre.data(), p.norm1.data(), kGateNormEps, N, d, c.key.data(), c.key_rstd.data());
  rmsnorm_forward(h, p.norm2.data(), kGateNormEps, N, d, c.query.data(), c.query_rstd.data());
  c.gate_score.ensure({N});
  c.alpha.ensure({N});
  const float inv_sqrt_d = float(1.0 / std::sqrt(double(d)));
#pragma omp parallel for schedule(static) if (N * d > 65536)
  for (int64_t i = 0; i < N; ++i) {
    double dot = 0.0;
    for (int64_t j = 0; j < d; ++j) dot += double(c.key[i * d + j]) * c.query[i * d + j];
    float s = float(dot) * inv_sqrt_d;
    float signed_root = std::copysign(std::sqrt(std::max(std::fabs(s), kGateFloor)), s);
    if (s == 0.0f) signed_root = 0.0f;  // sign(0) = 0
    c.gate_score[i] = s;
    c.alpha[i] = sigmoidf(signed_root);
  }

  c.value.ensure({N, d});
  c.u.ensure({N, d});
  linear_forward(c.e.data(), p.value_proj.data(), p.value_bias.data(), N, E, d, c.value.data());
#pragma omp parallel for schedule(static) if (N * d > 65536)
  for (int64_t i = 0; i < N; ++i)
    for (int64_t j = 0; j < d; ++j) c.u[i * d + j] = c.alpha[i] * c.value[i * d + j];

  // Short conv: out = u + silu(conv(RMSNorm(u))).
  c.conv_in.ensure({N, d});
  c.conv_rstd.ensure({N});
  c.conv_z.ensure({N, d});
  rmsnorm_forward(c.u.data(), p.conv_norm.data(), kConvNormEps, N, d, c.conv_in.data(), c.conv_rstd.data());
  short_conv_forward(c.conv_in.data(), p.conv_weight.data(), batch, seq_len, d, ec.kernel_size, ec.max_ngram_size,
                     c.conv_z.data());
  silu_forward(c.conv_z.data(), N * d, out);
#pragma omp parallel for simd schedule(static) if (N * d > 65536)
  for (int64_t i = 0; i < N * d; ++i) out[i] += c.u[i];
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
  const float inv_sqrt_d = float(1.0 / std::sqrt(double(d)));
#pragma omp parallel for schedule(static) if (N * d > 65536)
  for (int64_t i = 0; i < N; ++i) {
    double dalpha = 0.0;
    for (int64_t j = 0; j < d; ++j) {
      dalpha += double(du[i * d + j]) * c.value[i * d + j];
      dvalue[i * d + j] = du[i * d + j] * c.alpha[i];
    }
    const float a = c.alpha[i], s = c.gate_score[i];
    const float dsigned_root = float(dalpha) * a * (1.0f - a);
    // d signed_sqrt / ds = 1 / (2 sqrt|s|) above the floor, 0 under it.
    const float ds = std::fabs(s) > kGateFloor ? dsigned_root / (2.0f * std::sqrt(std::fabs(s))) : 0.0f;
    for (int64_t j = 0; j < d; ++j) {
      dkey[i * d + j] = ds * inv_sqrt_d * c.query[i * d + j];
      dquery[i * d + j] = ds * inv_sqrt_d * c.key[i * d + j];
    }
  }
  linear_backward(dvalue.data(), c.e.data(), p.value_proj.data(), N, E, d, de.data(), grads.value_proj.data(),
                  grads.value_bias.data());
  rmsnorm_backward(dkey.data(), c.key_pre.data(), p.norm1.data(), c.key_rstd.data(), N, d, dkey_pre.data(),
                   grads.norm1.data());
  linear_backward(dkey_pre.data(), c.e.data(), p.key_proj.data(), N, E, d, de.data(), grads.key_proj.data(),
                  grads.key_bias.data());
  rmsnorm_backward(dquery.data(), h, p.norm2.data(), c.query_rstd.data(), N, d, dh, grads.norm2.data());
  engram_gather_backward(de.data(), c.rows.data(), N, T, D, &grads.embedding_grad);
}

}  // namespace memoe
