#include "model/block_v4.h"

#include "kernels/embedding.h"
#include "kernels/norm.h"
#include "model/model.h"
#include "model/part_clock.h"

namespace memoe {

void MhcParams::allocate(int n, int64_t d, bool head) {
  const int64_t m = head ? n : (2 + n) * n;
  fn.resize({m, int64_t(n) * d});
  base.resize({m});
  scale.resize({head ? 1 : 3});
}

void MhcParams::visit(const std::string& prefix, const ParamVisitor& f, bool head) {
  using namespace param_role;
  f(prefix + "fn", fn, kMhcMatrix);
  f(prefix + "base", base, head ? kMhcHeadBase : kMhcBase);
  f(prefix + "scale", scale, kMhcScale);
}

MhcDims mhc_dims(const ModelConfig& cfg, int64_t tokens) {
  MhcDims m;
  m.tokens = tokens;
  m.n = cfg.hc_mult;
  m.d = cfg.hidden_size;
  m.sinkhorn_iters = cfg.v4->hc_sinkhorn_iters;
  m.hc_eps = float(cfg.v4->hc_eps);
  m.norm_eps = float(cfg.rms_norm_eps);
  return m;
}

bool uses_mhc(const ModelConfig& cfg) { return cfg.is_v4() && cfg.hc_mult > 1; }

namespace {


void mhc_pre(const MhcDims& k, const MhcParams& p, const float* x, MhcState& s) {
  const int64_t N = k.tokens, n = k.n;
  s.mixes.ensure({N, k.mixes()});
  s.rstd.ensure({N});
  s.pre.ensure({N, n});
  s.post.ensure({N, n});
  s.comb.ensure({N, n, n});
  s.u.ensure({N, k.d});
  mhc_pre_forward(k, x, p.fn.data(), p.scale.data(), p.base.data(), s.mixes.data(), s.rstd.data(), s.pre.data(),
                  s.post.data(), s.comb.data(), s.u.data());
}

// One sublayer wrapped in its mix: the streams x in, its collapsed input
// normed into `normed` (rstd), `sublayer(normed, s.f)`, the streams y out.
template <typename Sublayer>
void mhc_sublayer_forward(const MhcDims& k, const MhcParams& p, const Tensor& norm_weight, float eps, const float* x,
                          MhcState& s, Tensor& normed, Tensor& rstd, float* y, double* times, int part,
                          Sublayer&& sublayer) {
  PartClock clock;
  mhc_pre(k, p, x, s);
  clock(times[PartTimes::Mhc]);
  normed.ensure({k.tokens, k.d});
  rstd.ensure({k.tokens});
  rmsnorm_forward(s.u.data(), norm_weight.data(), eps, k.tokens, k.d, normed.data(), rstd.data());
  s.f.ensure({k.tokens, k.d});
  sublayer(normed.data(), s.f.data());
  clock(times[part]);
  mhc_post_forward(k, x, s.f.data(), s.post.data(), s.comb.data(), y);
  clock(times[PartTimes::Mhc]);
}

// out [N, n·d] = the rows e [N, d] copied into each of the n streams.
void copy_into_streams(const float* e, int64_t N, int64_t n, int64_t d, float* out) {
  for (int64_t t = 0; t < N; ++t)
    for (int64_t k = 0; k < n; ++k) std::copy(e + t * d, e + (t + 1) * d, out + (t * n + k) * d);
}

// The backward of one sublayer wrapped in its mix: dy (gradient of the
// streams it wrote) -> dx (gradient of the streams it read, written).
// `inner` maps the gradient of its output f to that of its normed input.
template <typename Inner>
void mhc_sublayer_backward(const MhcDims& k, const MhcParams& p, MhcParams& g, const Tensor& norm_weight,
                           Tensor& norm_grad, const float* x, const MhcState& s, const float* normed_rstd,
                           const float* dy, float* dx, double* times, int part, Inner&& inner) {
  PartClock clock;
  const int64_t N = k.tokens, n = k.n, d = k.d;
  Tensor df({N, d}), dpost({N, n}), dcomb({N, n, n}), dnormed({N, d}), du({N, d});
  std::fill(dx, dx + N * k.width(), 0.0f);
  mhc_post_backward(k, x, s.f.data(), s.post.data(), s.comb.data(), dy, dx, df.data(), dpost.data(), dcomb.data());
  clock(times[PartTimes::Mhc]);
  inner(df.data(), dnormed.data());
  rmsnorm_backward(dnormed.data(), s.u.data(), norm_weight.data(), normed_rstd, N, d, du.data(), norm_grad.data());
  clock(times[part]);
  mhc_pre_backward(k, x, p.fn.data(), p.scale.data(), p.base.data(), s.mixes.data(), s.rstd.data(), s.pre.data(),
                   du.data(), dpost.data(), dcomb.data(), dx, g.fn.data(), g.scale.data(), g.base.data());
  clock(times[PartTimes::Mhc]);
}

}  // namespace

void v4_embed_forward(const Model& m, ModelState& st) {
  const int64_t N = st.batch * st.seq_len, d = m.config.hidden_size, n = m.config.hc_mult;
  Tensor e({N, d});
  embedding_forward(m.params.embed_tokens, st.ids.data(), N, d, e.data());
  Tensor& h = layer_input(m, st, 0);
  h.ensure({N, n * d});
  copy_into_streams(e.data(), N, n, d, h.data());
}

void v4_streams_of(const Model& m, const Tensor& e, int64_t rows, Tensor& h) {
  const int64_t d = m.config.hidden_size, n = m.config.hc_mult;
  h.ensure({rows, n * d});
  copy_into_streams(e.data(), rows, n, d, h.data());
}

void v4_embed_backward(const Model& m, ModelState& st, ModelParams& g, const Tensor& dh) {
  const int64_t N = st.batch * st.seq_len, d = m.config.hidden_size, n = m.config.hc_mult;
  Tensor de({N, d});
  for (int64_t t = 0; t < N; ++t)
    for (int64_t k = 0; k < n; ++k)
      for (int64_t c = 0; c < d; ++c) de[t * d + c] += dh[(t * n + k) * d + c];
  embedding_backward(de.data(), st.ids.data(), N, d, g.embed_tokens.data());
}

void v4_layer_forward(const Model& m, int li, ModelState& st) {
  const ModelConfig& cfg = m.config;
  const LayerParams& p = m.params.layers[size_t(li)];
  LayerState& s = st.layers[size_t(li)];
  const MhcDims k = mhc_dims(cfg, st.batch * st.seq_len);
  const float eps = float(cfg.rms_norm_eps);
  double* ft = st.times.forward;
  s.h_in = Tensor();
  s.h_attn.ensure({k.tokens, k.width()});
  mhc_sublayer_forward(k, p.hc_attn, p.input_layernorm, eps, s.h_mid.data(), s.mhc_attn, s.x_attn, s.rstd_attn,
                       s.h_attn.data(), ft, PartTimes::Attention, [&](const float* x, float* f) {
                         attention_block_forward(cfg, st.rope, p.attn, x, st.batch, st.seq_len, s.attn, f);
                       });
  Tensor& out = layer_input(m, st, li + 1);
  out.ensure({k.tokens, k.width()});
  mhc_sublayer_forward(k, p.hc_ffn, p.post_attention_layernorm, eps, s.h_attn.data(), s.mhc_ffn, s.x_ffn, s.rstd_ffn,
                       out.data(), ft, PartTimes::MoE, [&](const float* x, float* f) {
                         moe_forward(cfg, p.moe, x, st.batch, st.seq_len, s.moe, f, m.expert_dispatch.get(), li,
                                     st.ids.data());
                         st.aux_loss += s.moe.aux_loss;
                       });
}

void v4_layer_backward(const Model& m, int li, ModelState& st, ModelParams& g, Tensor& dh) {
  const ModelConfig& cfg = m.config;
  const LayerParams& p = m.params.layers[size_t(li)];
  LayerParams& gl = g.layers[size_t(li)];
  LayerState& s = st.layers[size_t(li)];
  const int64_t N = st.batch * st.seq_len;
  const MhcDims k = mhc_dims(cfg, N);
  Tensor dmid({N, k.width()});
  mhc_sublayer_backward(k, p.hc_ffn, gl.hc_ffn, p.post_attention_layernorm, gl.post_attention_layernorm,
                        s.h_attn.data(), s.mhc_ffn, s.rstd_ffn.data(), dh.data(), dmid.data(), st.times.backward,
                        PartTimes::MoE, [&](const float* df, float* dnormed) {
                          moe_backward(cfg, p.moe, s.x_ffn.data(), s.moe, df, st.batch, st.seq_len, gl.moe, dnormed,
                                       m.expert_dispatch.get(), li);
                        });
  mhc_sublayer_backward(k, p.hc_attn, gl.hc_attn, p.input_layernorm, gl.input_layernorm, s.h_mid.data(), s.mhc_attn,
                        s.rstd_attn.data(), dmid.data(), dh.data(), st.times.backward, PartTimes::Attention,
                        [&](const float* df, float* dnormed) {
                          attention_block_backward(cfg, st.rope, p.attn, s.x_attn.data(), s.attn, df, st.batch,
                                                   st.seq_len, gl.attn, dnormed);
                        });
}

void v4_layer_cached(const Model& m, int li, const RopeTable& rope, const std::vector<AttentionKvCache*>& caches,
                     const int64_t* ids, int64_t n, Tensor& h) {
  const ModelConfig& cfg = m.config;
  const LayerParams& p = m.params.layers[size_t(li)];
  const int64_t S = int64_t(caches.size());
  const MhcDims k = mhc_dims(cfg, S * n);
  const float eps = float(cfg.rms_norm_eps);
  MhcState mix;
  Tensor x, rstd, mid({k.tokens, k.width()});
  double untimed[PartTimes::kParts] = {};
  mhc_sublayer_forward(k, p.hc_attn, p.input_layernorm, eps, h.data(), mix, x, rstd, mid.data(), untimed,
                       PartTimes::Attention, [&](const float* normed, float* f) {
                         attention_block_cached(cfg, rope, p.attn, normed, n, caches, f);
                       });
  mhc_sublayer_forward(k, p.hc_ffn, p.post_attention_layernorm, eps, mid.data(), mix, x, rstd, h.data(), untimed,
                       PartTimes::MoE, [&](const float* normed, float* f) {
                         MoECache scratch;  // routing of these tokens; nothing carries over
                         moe_forward(cfg, p.moe, normed, S, n, scratch, f, nullptr, li, ids);
                       });
}

void v4_collapse_rows(const Model& m, const Tensor& h, int64_t rows, Tensor& y) {
  const MhcDims k = mhc_dims(m.config, rows);
  const MhcParams& p = m.params.hc_head;
  Tensor mixes({rows, k.n}), rstd({rows}), w({rows, k.n});
  y.ensure({rows, k.d});
  mhc_head_forward(k, h.data(), p.fn.data(), p.scale.data(), p.base.data(), mixes.data(), rstd.data(), w.data(),
                   y.data());
}

void v4_head_collapse_forward(const Model& m, ModelState& st) {
  const int64_t N = st.batch * st.seq_len;
  const MhcDims k = mhc_dims(m.config, N);
  const MhcParams& p = m.params.hc_head;
  MhcHeadState& s = st.hc_head;
  s.mixes.ensure({N, k.n});
  s.rstd.ensure({N});
  s.w.ensure({N, k.n});
  s.y.ensure({N, k.d});
  mhc_head_forward(k, st.h_final.data(), p.fn.data(), p.scale.data(), p.base.data(), s.mixes.data(), s.rstd.data(),
                   s.w.data(), s.y.data());
}

void v4_head_collapse_backward(const Model& m, ModelState& st, ModelParams& g, const float* dy, Tensor& dh) {
  const int64_t N = st.batch * st.seq_len;
  const MhcDims k = mhc_dims(m.config, N);
  const MhcParams& p = m.params.hc_head;
  const MhcHeadState& s = st.hc_head;
  dh.ensure({N, k.width()});
  dh.zero();
  mhc_head_backward(k, st.h_final.data(), p.fn.data(), p.scale.data(), p.base.data(), s.mixes.data(), s.rstd.data(),
                    s.w.data(), dy, dh.data(), g.hc_head.fn.data(), g.hc_head.scale.data(), g.hc_head.base.data());
}

}  // namespace memoe
