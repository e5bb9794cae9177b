// Parameters are plain Tensors held in one struct per layer. Each struct
// lists its tensors under their checkpoint names (spec §6) through visit(),
// and declares there, once, each tensor's role: how it is initialised,
// whether AdamW decays it, its learning-rate scale, and whether it is
// updated densely, by rows, or not by the optimizer at all. Gradients use
// the same struct types, so a name finds both. Tensors that a gradient
// struct leaves empty (the Engram tables, updated sparsely) are skipped.
#pragma once
#include <functional>
#include <string>
#include <type_traits>
#include <utility>

#include "core/tensor.h"

namespace memoe {

enum class ParamInit {
  Normal,        // N(0, 0.02)
  OutputNormal,  // N(0, 0.02 / sqrt(2 * layers)): projections back into the residual stream
  Ones,          // norm scales
  Zeros,         // biases, the router's correction bias, the Engram short conv (spec §5.4)
  // mHC (docs/v4.md): the biases that make a sublayer's mix the identity-like
  // fixed map at step 0 (pre 1/n, post 1, the combination 0.99 on its
  // diagonal), the head's (weights 1/n), and the gating factors (0.01).
  MhcBase,
  MhcHeadBase,
  MhcScale,
};

enum class ParamUpdate {
  Dense,        // AdamW on every element, every step
  SparseRows,   // lazy Adam on the rows a step read (the Engram tables); its gradient is a SparseRowGrad
  RouterBias,   // the aux-loss-free balancing rule of spec §4 after each step; never the optimizer
};

enum class LrScale {
  Base,         // the schedule's learning rate
  EngramTable,  // × engram.table_lr_mult (spec §5.5)
};

struct ParamRole {
  ParamInit init;
  bool weight_decay;
  LrScale lr;
  ParamUpdate update;
  // In bf16 precision its matrix products read a bf16 copy of it, refreshed
  // after every optimizer step (ModelParams::refresh_bf16_copies).
  bool bf16_copy = false;
  // Read only by row gathers (embeddings, the Engram tables; a tied
  // embedding is also the LM head's matrix): the kernels read its rows in
  // fp32 or bf16, so inference can leave it in the checkpoint's mapping.
  bool gathered = false;
};

// Elements [begin, end) of one parameter, flat in its storage order: the
// part of it an optimizer keeps moments for and updates (all of it in one
// process; one shard of it under ZeRO-1). A table's slices hold whole rows.
struct ParamSlice {
  std::string name;
  int64_t begin = 0, end = 0;
  int64_t size() const { return end - begin; }
};

namespace param_role {
inline constexpr ParamRole kMatrix{ParamInit::Normal, true, LrScale::Base, ParamUpdate::Dense, true};
inline constexpr ParamRole kOutputMatrix{ParamInit::OutputNormal, true, LrScale::Base, ParamUpdate::Dense, true};
// The router's gate: a matrix, but its logits decide the routing, which
// stays fp32 (as DeepSeek-V3 keeps its gating), so it has no bf16 copy.
inline constexpr ParamRole kRouterGate{ParamInit::Normal, true, LrScale::Base, ParamUpdate::Dense, false};
// The embedding is only gathered from, so it needs no bf16 copy unless it
// is also the (tied) LM head.
inline constexpr ParamRole kEmbedding{ParamInit::Normal, true, LrScale::Base, ParamUpdate::Dense, false, true};
inline constexpr ParamRole kTiedEmbedding{ParamInit::Normal, true, LrScale::Base, ParamUpdate::Dense, true, true};
inline constexpr ParamRole kNormScale{ParamInit::Ones, false, LrScale::Base, ParamUpdate::Dense};
inline constexpr ParamRole kBias{ParamInit::Zeros, false, LrScale::Base, ParamUpdate::Dense};
// The depthwise short conv is d·k per-channel scalars, closer to a norm
// scale or a bias than to a matrix, and starts at zero (the layer's output
// is then just its gated value), so decay would only pull it back to "off":
// no decay.
inline constexpr ParamRole kShortConv{ParamInit::Zeros, false, LrScale::Base, ParamUpdate::Dense};
inline constexpr ParamRole kEngramTable{ParamInit::Normal, false, LrScale::EngramTable, ParamUpdate::SparseRows, false,
                                         true};
inline constexpr ParamRole kRouterBias{ParamInit::Zeros, false, LrScale::Base, ParamUpdate::RouterBias};
// mHC's projection of the flattened streams: a matrix, kept and multiplied
// in fp32 (as DeepSeek keeps every hc_* tensor).
inline constexpr ParamRole kMhcMatrix{ParamInit::Normal, true, LrScale::Base, ParamUpdate::Dense, false};
inline constexpr ParamRole kMhcBase{ParamInit::MhcBase, false, LrScale::Base, ParamUpdate::Dense};
inline constexpr ParamRole kMhcHeadBase{ParamInit::MhcHeadBase, false, LrScale::Base, ParamUpdate::Dense};
inline constexpr ParamRole kMhcScale{ParamInit::MhcScale, false, LrScale::Base, ParamUpdate::Dense};
}  // namespace param_role

// Called once per tensor with its checkpoint name and role. Visitors that do
// not need the role may take (name, tensor) only.
class ParamVisitor {
 public:
  using Fn = std::function<void(const std::string& name, Tensor& tensor, const ParamRole& role)>;

  template <class F>
    requires std::is_invocable_v<F&, const std::string&, Tensor&, const ParamRole&>
  ParamVisitor(F f) : fn_(std::move(f)) {}
  template <class F>
    requires(!std::is_invocable_v<F&, const std::string&, Tensor&, const ParamRole&> &&
             std::is_invocable_v<F&, const std::string&, Tensor&>)
  ParamVisitor(F f) : fn_([g = std::move(f)](const std::string& n, Tensor& t, const ParamRole&) mutable { g(n, t); }) {}

  void operator()(const std::string& name, Tensor& tensor, const ParamRole& role) const { fn_(name, tensor, role); }

 private:
  Fn fn_;
};

struct SparseRowGrad;
// The sparse gradients of a gradient struct, under their tables' names.
using SparseRowGradVisitor = std::function<void(const std::string& name, SparseRowGrad& grad)>;

}  // namespace memoe
