// DeepSeekMoE layer (spec §4): a sigmoid (or softmax) router with a
// selection-only correction bias and group-limited top-k, routed SwiGLU
// experts weighted by the router scores, plus always-on shared experts.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "io/config.h"
#include "kernels/moe_dispatch.h"
#include "model/params.h"
#include "model/swiglu.h"

namespace memoe {

struct MoEParams {
  Tensor gate;                     // [E, d]
  Tensor e_score_correction_bias;  // [E]; chooses experts, never weights them (its gradient stays zero)
  std::vector<SwiGLUParams> experts;  // E experts, each [F, d], [F, d], [d, F]; only the held ones allocated
  SwiGLUParams shared;             // width n_shared_experts * F; empty when n_shared_experts == 0
  // The routed experts this process holds: all of them, or an expert-
  // parallel rank's shard. Only these are visited (checkpoints, optimizer,
  // gradient sums); the others stay empty.
  int expert_begin = 0, expert_end = 0;
  // DeepSeek-V4: the release's names, clamped experts, and on its first
  // num_hash_layers layers routing by token id: tid2eid [V, k], fixed (never
  // trained, not a float tensor), and no correction bias.
  bool v4 = false;
  std::vector<int32_t> tid2eid;
  bool routes_by_token() const { return !tid2eid.empty(); }

  // Every expert held. `layer` decides V4's hash routing (tid2eid is sized
  // here; init fills it).
  void allocate(const ModelConfig& cfg, int layer = -1);
  // Frees the experts outside [begin, end).
  void hold_experts(int begin, int end);
  bool holds_all_experts() const { return expert_begin == 0 && expert_end == int(experts.size()); }
  // prefix e.g. "model.layers.3.mlp." -> gate.weight, gate.e_score_correction_bias,
  // experts.{j}.{gate,up,down}_proj.weight, shared_experts.{gate,up,down}_proj.weight;
  // V4 "layers.3.ffn." -> gate.weight, gate.bias (score-routed layers),
  // experts.{j}.{w1,w3,w2}.weight, shared_experts.{w1,w3,w2}.weight.
  void visit(const std::string& prefix, const ParamVisitor& f);
};

// What an expert-parallel dispatch (parallel/expert_parallel.h) keeps between
// the passes: the rows it was sent, its experts' activations over them, and
// the outputs it got back for this process's own rows.
struct RemoteExpertCache {
  std::vector<int64_t> send_rows, recv_rows;  // rows to / from each peer
  std::vector<int64_t> rows;                  // [peers x held experts]: rows received per (source, expert)
  Tensor received;                            // those rows, source-major, then expert
  std::vector<SwiGLUCache> experts;           // per (source, held expert)
  Tensor out;                                 // [pairs, d]: the outputs of this process's grouped rows
};

// What the backward pass needs from the forward pass, plus the routing
// statistics the trainer reads.
struct MoECache {
  int64_t batch = 0, seq_len = 0;
  Tensor scores;                     // s [B*L, E]
  std::vector<int32_t> expert_ids;   // [B*L, k]
  std::vector<float> weights;        // w [B*L, k]
  ExpertGroups groups;               // (token, slot) pairs sorted by expert
  std::vector<SwiGLUCache> experts;  // per expert, over its grouped rows
  SwiGLUCache shared;
  std::vector<int64_t> expert_load;  // tokens routed to each expert: c_e of the bias update
  double aux_loss = 0.0;             // sequence-wise balance loss (0 unless seq_aux_loss_alpha > 0)
  RemoteExpertCache remote;          // only under an expert-parallel dispatch
};

// Where the routed experts run over their grouped rows. Without one they
// run here, in this process (which must hold them all); an expert-parallel
// run injects one (parallel/expert_parallel.h) that sends each expert's rows to
// the rank holding it and its outputs back: the layer never knows ranks.
// `layer` names the layer (its index in the model) to the dispatch.
class ExpertDispatch {
 public:
  virtual ~ExpertDispatch() = default;
  // out[r] = the expert of grouped row r applied to xg[r] (rows of groups).
  virtual void forward(int layer, const ModelConfig& cfg, const MoEParams& p, const ExpertGroups& groups,
                       const float* xg, MoECache& cache, float* out) = 0;
  // The outputs forward() gave, again (for the routing weights' gradient).
  virtual void outputs(int layer, const ModelConfig& cfg, const MoEParams& p, const ExpertGroups& groups,
                       const MoECache& cache, float* out) = 0;
  // gy[r]: d loss / d the output of grouped row r. Writes dxg (d loss / d
  // xg) and adds the gradients of the experts this process holds into grads.
  virtual void backward(int layer, const ModelConfig& cfg, const MoEParams& p, const ExpertGroups& groups,
                        const float* xg, const MoECache& cache, const float* gy, MoEParams& grads, float* dxg) = 0;
};

// The routed expert tensors' names: "model.layers.L.mlp.experts.J." +
// {gate,up,down}_proj.weight, or V4's "layers.L.ffn.experts.J." +
// {w1,w3,w2}.weight. The expert index J, or -1 for any other name.
int routed_expert_of(const std::string& name);

RouterSpec router_spec(const ModelConfig& cfg);

// y[B*L, d] = MoE(x[B*L, d]); overwrites y. Fills cache. dispatch null:
// the experts run here. token_ids [B*L]: what a token-routed layer
// (routes_by_token) routes by; others ignore it.
void moe_forward(const ModelConfig& cfg, const MoEParams& p, const float* x, int64_t batch, int64_t seq_len,
                 MoECache& cache, float* y, ExpertDispatch* dispatch = nullptr, int layer = 0,
                 const int64_t* token_ids = nullptr);

// Adds into grads (allocated like p) and dx, given dy and the cache of the
// forward pass over the same x. Includes the balance loss's gradient (with an
// upstream gradient of 1) when cfg.seq_aux_loss_alpha > 0.
void moe_backward(const ModelConfig& cfg, const MoEParams& p, const float* x, const MoECache& cache, const float* dy,
                  int64_t batch, int64_t seq_len, MoEParams& grads, float* dx, ExpertDispatch* dispatch = nullptr,
                  int layer = 0);

// Auxiliary-loss-free balancing, after an optimizer step: bias_e += gamma *
// sign(mean load - load_e), with load summed over the whole step.
void update_correction_bias(const std::vector<int64_t>& load, double gamma, Tensor& bias);

}  // namespace memoe
