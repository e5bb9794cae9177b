#include "model/moe.h"

#include <algorithm>

#include "core/error.h"
#include "kernels/linear.h"

namespace memoe {

namespace {

void check_shape(const Tensor& t, const std::vector<int64_t>& want, const std::string& what) {
  MEMOE_CHECK(t.shape() == want, "moe: ", what, " has shape ", shape_string(t.shape()), ", expected ",
              shape_string(want));
}

// Checks a parameter (or gradient) struct against the config so that a
// mismatch is an error, not an out-of-bounds read.
void check_params(const ModelConfig& cfg, const MoEParams& p, const char* what) {
  const int64_t E = cfg.n_routed_experts, d = cfg.hidden_size, F = cfg.moe_intermediate_size;
  const std::string w = what;
  check_shape(p.gate, {E, d}, w + " gate.weight");
  MEMOE_CHECK(p.experts.size() == size_t(E), "moe: ", w, " has ", p.experts.size(), " experts, config says ", E);
  MEMOE_CHECK(0 <= p.expert_begin && p.expert_begin < p.expert_end && p.expert_end <= E, "moe: ", w,
              " holds experts ", p.expert_begin, "..", p.expert_end - 1, " of ", E);
  for (int64_t e = p.expert_begin; e < p.expert_end; ++e) {
    const SwiGLUParams& ex = p.experts[size_t(e)];
    const std::string name = w + " experts." + std::to_string(e) + ".";
    check_shape(ex.gate_proj, {F, d}, name + "gate_proj");
    check_shape(ex.up_proj, {F, d}, name + "up_proj");
    check_shape(ex.down_proj, {d, F}, name + "down_proj");
  }
  const int64_t S = cfg.n_shared_experts * F;
  if (S > 0) {
    check_shape(p.shared.gate_proj, {S, d}, w + " shared_experts.gate_proj");
    check_shape(p.shared.up_proj, {S, d}, w + " shared_experts.up_proj");
    check_shape(p.shared.down_proj, {d, S}, w + " shared_experts.down_proj");
  }
}

// The experts run in this process, one SwiGLU over each expert's rows.
class LocalExperts final : public ExpertDispatch {
 public:
  void forward(int, const ModelConfig&, const MoEParams& p, const ExpertGroups& groups, const float* xg,
               MoECache& cache, float* out) override {
    check_all_held(p);
    const int64_t d = p.gate.dim(1);
    for_each_busy_expert(groups, expert_weights(p), [&](int e, int64_t first, int64_t rows) {
      swiglu_ffn_forward(p.experts[size_t(e)], xg + first * d, rows, cache.experts[size_t(e)], out + first * d);
    });
  }
  // Recomputed from the cached activations (one product; cheaper than
  // keeping [B*L*k, d] alive between the passes).
  void outputs(int, const ModelConfig& cfg, const MoEParams& p, const ExpertGroups& groups, const MoECache& cache,
               float* out) override {
    check_all_held(p);
    const int64_t d = cfg.hidden_size, F = cfg.moe_intermediate_size;
    for_each_busy_expert(groups, expert_weights(p), [&](int e, int64_t first, int64_t rows) {
      linear_forward(cache.experts[size_t(e)].h_operand(), p.experts[size_t(e)].down_proj, nullptr, rows, F, d,
                     out + first * d);
    });
  }
  void backward(int, const ModelConfig& cfg, const MoEParams& p, const ExpertGroups& groups, const float* xg,
                const MoECache& cache, const float* gy, MoEParams& grads, float* dxg) override {
    check_all_held(p);
    const int64_t d = cfg.hidden_size;
    for_each_busy_expert(groups, expert_weights(p), [&](int e, int64_t first, int64_t rows) {
      swiglu_ffn_backward(p.experts[size_t(e)], xg + first * d, cache.experts[size_t(e)], gy + first * d, rows,
                          grads.experts[size_t(e)], dxg + first * d);
    });
  }

 private:
  // The weights of one routed expert: gate, up and down projections.
  static int64_t expert_weights(const MoEParams& p) {
    return 3 * p.experts[size_t(p.expert_begin)].gate_proj.numel();
  }
  static void check_all_held(const MoEParams& p) {
    MEMOE_CHECK(p.holds_all_experts(), "moe: this process holds experts ", p.expert_begin, "..", p.expert_end - 1,
                " of ", p.experts.size(), " only; an expert-parallel dispatch must run them");
  }
};

ExpertDispatch& dispatch_or_local(ExpertDispatch* dispatch) {
  static LocalExperts local;  // stateless
  return dispatch ? *dispatch : local;
}

}  // namespace

int routed_expert_of(const std::string& name) {
  for (const auto& [lead, marker] : {std::pair<std::string, std::string>{"model.layers.", ".mlp.experts."},
                                     {"layers.", ".ffn.experts."}}) {
    const size_t at = name.find(marker);
    if (name.rfind(lead, 0) != 0 || at == std::string::npos) continue;
    try {
      return std::stoi(name.substr(at + marker.size()));
    } catch (const std::exception&) {
      return -1;
    }
  }
  return -1;
}

RouterSpec router_spec(const ModelConfig& cfg) {
  RouterSpec spec;
  spec.n_experts = cfg.n_routed_experts;
  spec.top_k = cfg.num_experts_per_tok;
  spec.n_group = cfg.n_group;
  spec.topk_group = cfg.topk_group;
  spec.scoring = cfg.scoring_func == ScoringFunc::Softmax        ? RouterScoring::Softmax
                 : cfg.scoring_func == ScoringFunc::SqrtSoftplus ? RouterScoring::SqrtSoftplus
                                                                 : RouterScoring::Sigmoid;
  spec.norm_topk_prob = cfg.norm_topk_prob;
  spec.routed_scaling_factor = float(cfg.routed_scaling_factor);
  return spec;
}

void MoEParams::allocate(const ModelConfig& cfg, int layer) {
  const int64_t E = cfg.n_routed_experts, d = cfg.hidden_size, F = cfg.moe_intermediate_size;
  v4 = cfg.is_v4();
  const bool by_token = v4 && layer >= 0 && cfg.v4->is_hash_layer(layer);
  gate.resize({E, d});
  e_score_correction_bias = Tensor();
  if (!by_token) e_score_correction_bias.resize({E});
  tid2eid.assign(by_token ? size_t(cfg.vocab_size * cfg.num_experts_per_tok) : 0, 0);
  experts.assign(size_t(E), SwiGLUParams{});
  // V4 clamps the shared expert too (DeepSeek's current revision).
  const float limit = v4 ? float(cfg.v4->swiglu_limit) : 0.0f;
  for (SwiGLUParams& ex : experts) v4 ? ex.allocate_v4(d, F, limit) : ex.allocate(d, F);
  expert_begin = 0;
  expert_end = int(E);
  shared = SwiGLUParams{};
  if (cfg.n_shared_experts > 0)
    v4 ? shared.allocate_v4(d, cfg.n_shared_experts * F, limit) : shared.allocate(d, cfg.n_shared_experts * F);
}

void MoEParams::hold_experts(int begin, int end) {
  MEMOE_CHECK(0 <= begin && begin < end && end <= int(experts.size()), "moe: cannot hold experts ", begin, "..",
              end - 1, " of ", experts.size());
  for (int e = 0; e < int(experts.size()); ++e)
    if (e < begin || e >= end) {
      SwiGLUParams none;  // keeps its kind, frees its tensors
      none.limit = experts[size_t(e)].limit;
      none.v4 = v4;
      experts[size_t(e)] = std::move(none);
    }
  expert_begin = begin;
  expert_end = end;
}

void MoEParams::visit(const std::string& prefix, const ParamVisitor& f) {
  f(prefix + "gate.weight", gate, param_role::kRouterGate);
  if (!e_score_correction_bias.empty())
    f(prefix + (v4 ? "gate.bias" : "gate.e_score_correction_bias"), e_score_correction_bias, param_role::kRouterBias);
  for (int j = expert_begin; j < expert_end; ++j) experts[size_t(j)].visit(prefix + "experts." + std::to_string(j) + ".", f);
  if (!shared.gate_proj.empty()) shared.visit(prefix + "shared_experts.", f);
}

void moe_forward(const ModelConfig& cfg, const MoEParams& p, const float* x, int64_t batch, int64_t seq_len,
                 MoECache& cache, float* y, ExpertDispatch* dispatch, int layer, const int64_t* token_ids) {
  const RouterSpec spec = router_spec(cfg);
  check_router_spec(spec);
  check_params(cfg, p, "params");
  if (p.routes_by_token()) {
    MEMOE_CHECK(token_ids != nullptr || batch * seq_len == 0, "moe: a token-routed layer needs the token ids");
    MEMOE_CHECK(int64_t(p.tid2eid.size()) == cfg.vocab_size * cfg.num_experts_per_tok, "moe: tid2eid has ",
                p.tid2eid.size(), " entries, expected vocab_size x num_experts_per_tok");
  } else {
    check_shape(p.e_score_correction_bias, {cfg.n_routed_experts}, "params gate.e_score_correction_bias");
  }
  MEMOE_CHECK(batch >= 0 && seq_len >= 0, "moe: bad batch ", batch, " x seq_len ", seq_len);
  const int E = spec.n_experts, k = spec.top_k;
  const int64_t d = cfg.hidden_size, n = batch * seq_len, pairs = n * k;

  cache.batch = batch;
  cache.seq_len = seq_len;
  cache.scores.resize({n, E});
  cache.expert_ids.resize(static_cast<size_t>(pairs));
  cache.weights.resize(static_cast<size_t>(pairs));
  cache.experts.resize(static_cast<size_t>(E));
  cache.expert_load.assign(size_t(E), 0);
  cache.aux_loss = 0.0;

  // Router: logits -> scores -> top-k choice (with bias) and weights (without).
  Tensor logits({n, E});
  linear_forward(x, p.gate, nullptr, n, d, E, logits.data());
  router_scores(spec, logits.data(), n, cache.scores.data());
  if (p.routes_by_token())
    route_by_token(spec, cache.scores.data(), p.tid2eid.data(), token_ids, n, cache.expert_ids.data(),
                   cache.weights.data());
  else
    route_top_k(spec, cache.scores.data(), p.e_score_correction_bias.data(), n, cache.expert_ids.data(),
                cache.weights.data());
  group_by_expert(cache.expert_ids.data(), n, k, E, cache.groups);
  for (int e = 0; e < E; ++e) cache.expert_load[size_t(e)] = cache.groups.count(e);

  // Shared experts see every token; their output initialises y.
  if (cfg.n_shared_experts > 0) {
    swiglu_ffn_forward(p.shared, x, n, cache.shared, y);
  } else {
    std::fill(y, y + n * d, 0.0f);
  }

  // Routed experts: gather each expert's rows, one SwiGLU over them, then
  // add the weighted outputs back per token.
  Tensor xg({pairs, d}), out({pairs, d});
  gather_rows(x, d, cache.groups.pairs.data(), pairs, k, xg.data());
  dispatch_or_local(dispatch).forward(layer, cfg, p, cache.groups, xg.data(), cache, out.data());
  combine_rows(out.data(), cache.groups.position.data(), cache.weights.data(), n, k, d, y);

  if (cfg.seq_aux_loss_alpha > 0.0)
    cache.aux_loss =
        seq_balance_loss(spec, cache.scores.data(), cache.expert_ids.data(), batch, seq_len, cfg.seq_aux_loss_alpha);
}

void moe_backward(const ModelConfig& cfg, const MoEParams& p, const float* x, const MoECache& cache, const float* dy,
                  int64_t batch, int64_t seq_len, MoEParams& grads, float* dx, ExpertDispatch* dispatch, int layer) {
  const RouterSpec spec = router_spec(cfg);
  check_params(cfg, p, "params");
  check_params(cfg, grads, "grads");
  MEMOE_CHECK(batch == cache.batch && seq_len == cache.seq_len, "moe backward: batch ", batch, " x ", seq_len,
              " differs from the forward pass's ", cache.batch, " x ", cache.seq_len);
  const int E = spec.n_experts, k = spec.top_k;
  const int64_t d = cfg.hidden_size, n = batch * seq_len, pairs = n * k;
  MEMOE_CHECK(cache.scores.numel() == n * E && cache.expert_ids.size() == size_t(pairs) &&
                  cache.experts.size() == size_t(E),
              "moe backward: cache does not come from a forward pass with this config");
  if (n == 0) return;

  if (cfg.n_shared_experts > 0) swiglu_ffn_backward(p.shared, x, cache.shared, dy, n, grads.shared, dx);

  // dw (d loss / d weight) = <dy_t, expert output> per grouped row; then
  // the experts' own backward on dy_t scaled by w.
  Tensor xg({pairs, d}), gy({pairs, d}), out({pairs, d}), dxg({pairs, d});
  std::vector<float> dw(static_cast<size_t>(pairs));
  gather_rows(x, d, cache.groups.pairs.data(), pairs, k, xg.data());
  gather_rows(dy, d, cache.groups.pairs.data(), pairs, k, gy.data());
  ExpertDispatch& experts = dispatch_or_local(dispatch);
  experts.outputs(layer, cfg, p, cache.groups, cache, out.data());
  combine_rows_backward(out.data(), cache.groups.pairs.data(), cache.weights.data(), pairs, d, gy.data(), dw.data());
  experts.backward(layer, cfg, p, cache.groups, xg.data(), cache, gy.data(), grads, dxg.data());
  combine_rows(dxg.data(), cache.groups.position.data(), nullptr, n, k, d, dx);

  // Router: weights (and the balance loss) -> scores -> logits -> gate, x.
  // The choice and the correction bias carry no gradient.
  Tensor ds({n, E}), dlogits({n, E});
  route_weights_backward(spec, cache.scores.data(), cache.expert_ids.data(), dw.data(), n, ds.data());
  if (cfg.seq_aux_loss_alpha > 0.0)
    seq_balance_loss_backward(spec, cache.scores.data(), cache.expert_ids.data(), batch, seq_len,
                              cfg.seq_aux_loss_alpha, ds.data());
  router_scores_backward(spec, cache.scores.data(), ds.data(), n, dlogits.data());
  linear_backward(dlogits.data(), x, p.gate, n, d, E, dx, grads.gate.data(), nullptr);
}

void update_correction_bias(const std::vector<int64_t>& load, double gamma, Tensor& bias) {
  MEMOE_CHECK(bias.numel() == int64_t(load.size()), "moe: correction bias has ", bias.numel(),
              " entries but the load counts ", load.size(), " experts");
  correction_bias_step(load.data(), int64_t(load.size()), gamma, bias.data());
}

}  // namespace memoe
