// The whole model (spec §2): embedding, the layer stack (Engram, attention,
// dense or MoE FFN, each with its residual), final norm and LM head. Forward
// and backward run over explicit state: parameters in ModelParams, one
// forward's activations in ModelState, gradients in another ModelParams.
#pragma once
#include <memory>
#include <vector>

#include "io/config.h"
#include "io/page_prefetch.h"
#include "kernels/linear.h"
#include "kernels/rope.h"
#include "model/attention.h"
#include "model/block_v4.h"
#include "model/engram.h"
#include "model/moe.h"
#include "model/swiglu.h"

namespace memoe {

struct LayerParams {
  Tensor input_layernorm;           // [d]
  Tensor post_attention_layernorm;  // [d]
  AttentionParams attn;
  SwiGLUParams mlp;  // dense FFN layers (layer < first_k_dense_replace)
  MoEParams moe;     // MoE layers
  EngramParams engram;
  MhcParams hc_attn, hc_ffn;  // V4 with hc_mult > 1: the mixes around attention and the FFN
  bool has_engram = false;
  bool is_moe = false;
};

struct ModelParams {
  Tensor embed_tokens;  // [V, d]
  Tensor norm;          // [d]
  Tensor lm_head;       // [V, d]; empty when tied to embed_tokens
  MhcParams hc_head;    // V4 with hc_mult > 1: the streams' collapse before the final norm
  std::vector<LayerParams> layers;
  bool v4_names = false;  // the release's tensor names (deepseek-v4.md §6.1), for V4 configs

  // engram_rows[l]: table rows of layer l (0 where it has no Engram). A
  // gradient struct leaves the Engram tables empty (their gradient is sparse).
  void allocate(const ModelConfig& cfg, const std::vector<int64_t>& engram_rows, bool is_gradient);
  // Every float tensor under its checkpoint name (spec §6).
  void visit(const ParamVisitor& f);
  void visit_sparse_grads(const SparseRowGradVisitor& f);  // gradient structs
  void zero();
  // bf16 precision gives each tensor whose role asks for one a bf16 copy of
  // its values (and their products run in bf16); fp32 drops them all.
  void set_precision(Precision p);
  // Re-rounds the copies from the values: after every change to the values
  // (an optimizer step, a load). Without copies, nothing to do.
  void refresh_bf16_copies();
  // Every MoE layer keeps only routed experts [begin, end) (an expert-
  // parallel rank's shard; MoEParams::hold_experts).
  void hold_experts(int begin, int end);
  // A pipeline stage's share: layers [first, last) (the others become empty
  // LayerParams, flags cleared, and visit skips them), the embedding when
  // `embedding`, the final norm and LM head when `head`. A last stage of
  // tied embeddings that is not also the first keeps embed_tokens as its
  // head's weight only: visit skips it (the first stage owns, updates and
  // saves it); set_precision, refresh_bf16_copies and zero() still reach it.
  void hold_layers(int first, int last, bool embedding, bool head);
  int first_layer = 0, last_layer = -1;  // held layers [first_layer, last_layer); -1: every layer
  bool holds_embedding = true, holds_head = true;
  // embed_tokens held only as the tied head's weight (see hold_layers).
  bool head_copy_of_embedding() const { return !holds_embedding && holds_head && lm_head.empty(); }
};

// The addends of a global gradient norm's square, in the order they are
// added: each dense tensor's in visit order, then each layer's Engram rows.
// Pipeline stages concatenate theirs in stage order and add them up: the
// bits of one process's norm (the stages' visit orders follow one another).
struct GradientNormTerms {
  std::vector<double> dense, rows;
};

struct Model {
  ModelConfig config;
  std::vector<int64_t> token_map;       // [V]: token id -> compressed id (spec §5.1)
  std::vector<EngramHash> engram_hash;  // per layer; empty where no Engram
  ModelParams params;
  // Inference with the Engram tables left in the mapped checkpoint: reads
  // ahead the rows of the tokens about to be fed (model/inference.h). Null:
  // no read-ahead. Declared after params, so it stops before they unmap.
  std::shared_ptr<PagePrefetcher> engram_prefetcher;
  // Where the routed experts run (model/moe.h). Null: here, all of them.
  std::shared_ptr<ExpertDispatch> expert_dispatch;
  // Where the Engram layers' rows come from (model/engram.h). Null: the
  // layers' own tables.
  std::shared_ptr<EngramRowSource> engram_row_source;
  int64_t compressed_vocab() const;     // V' = max(token_map) + 1
  std::vector<int64_t> engram_rows() const;
  ModelParams make_gradients() const;   // zeroed, shaped like params (the same layers and experts held)
};

// V4 with hc_mult > 1 keeps n streams in each residual tensor ([N, n·d]).
struct LayerState {
  Tensor h_in;                // residual entering the layer (Engram's input)
  Tensor h_mid;               // residual after Engram: input of input_layernorm
  Tensor h_attn;              // residual after attention: input of post_attention_layernorm
  Tensor x_attn, rstd_attn;   // normed attention input
  Tensor x_ffn, rstd_ffn;     // normed FFN input
  AttentionCache attn;
  SwiGLUCache mlp;
  MoECache moe;
  EngramCache engram;
  MhcState mhc_attn, mhc_ffn;  // V4: the mixes; x_attn, x_ffn are then the norms of their collapsed inputs
};

// Seconds spent per part of the model, accumulated over passes (for
// benchmarks and profiling; reset by the caller).
struct PartTimes {
  enum Part { Embed, Engram, Attention, DenseFfn, MoE, Head, Mhc, kParts };  // Mhc: V4's mixes
  double forward[kParts] = {};
  double backward[kParts] = {};
  static const char* name(int part);
};

// Activations of one forward pass over ids [batch, seq_len].
struct ModelState {
  PartTimes times;
  int64_t batch = 0, seq_len = 0;
  RopeTable rope;
  std::vector<int64_t> ids, compressed_ids;
  std::vector<LayerState> layers;
  Tensor h_final, final_rstd, final_out;  // residual at the end, its norm
  MhcHeadState hc_head;                   // V4: the streams collapsed (final_out normalises hc_head.y)
  Tensor logits;                          // [B*L, V]
  Tensor dlogits;                         // its gradient (kept: 4·B·L·V bytes are worth reusing)
  std::vector<uint16_t> dlogits_bf16;     // instead, when the LM head's products run in bf16: all they read
  double aux_loss = 0.0;                  // sequence-wise balance loss (0 unless enabled)
};

// Refuses, in one line, a config the engine cannot build yet (V4's
// compressed attention). ModelParams::allocate calls it first.
void require_engine_support(const ModelConfig& cfg);

// The LM head's weight: lm_head, or embed_tokens when they are tied.
const Tensor& lm_head_weight(const Model& m);

// Checks ids against the vocabulary (one line naming the bad id and position).
void check_token_ids(const ModelConfig& cfg, const int64_t* ids, int64_t count);

// Fills state, including state.logits.
void model_forward(const Model& m, const int64_t* ids, int64_t batch, int64_t seq_len, ModelState& state);

// Next-token targets: ids[t+1] within each sequence, -1 at its last position.
std::vector<int64_t> next_token_targets(const int64_t* ids, int64_t batch, int64_t seq_len);

// Called by the backward pass as the parameter gradients of a part become
// final: num_hidden_layers for the head (final norm, lm_head), then each
// layer from the last to 0, then -1 for the embedding. A data-parallel
// caller starts sending those gradients while the rest of the backward runs.
using GradientReadyHook = std::function<void(int part)>;

// Forward, mean cross-entropy (+ the MoE balance loss when enabled) and, when
// grads is not null, the backward pass adding into *grads. Returns the loss.
double model_loss_and_grad(const Model& m, const int64_t* ids, const int64_t* targets, int64_t batch,
                           int64_t seq_len, ModelState& state, ModelParams* grads,
                           const GradientReadyHook& on_ready = {});

// The same passes over a range of layers, for pipeline stages: model_forward
// is model_begin, embed_forward, layers_forward over [0, L) and head_forward;
// model_loss_and_grad adds head_loss_and_grad (cross-entropy without the
// balance loss, and the head's backward into dh), layers_backward over
// [0, L) and embed_backward. A stage that starts at layer `first` writes its
// input into layer_input(first) (layer L: the residual entering the head)
// and reads the gradient it passes down from dh after layers_backward.
Tensor& layer_input(const Model& m, ModelState& state, int layer);
void model_begin(const Model& m, const int64_t* ids, int64_t batch, int64_t seq_len, ModelState& state);
void embed_forward(const Model& m, ModelState& state);
void layers_forward(const Model& m, int first, int last, ModelState& state);  // adds to state.aux_loss
void head_forward(const Model& m, ModelState& state);
double head_loss_and_grad(const Model& m, const int64_t* targets, ModelState& state, ModelParams* grads, Tensor& dh,
                          const GradientReadyHook& on_ready = {});
void layers_backward(const Model& m, int first, int last, ModelState& state, ModelParams& grads, Tensor& dh,
                     const GradientReadyHook& on_ready = {});
void embed_backward(const Model& m, ModelState& state, ModelParams& grads, const Tensor& dh,
                    const GradientReadyHook& on_ready = {});

// The layer of a parameter's checkpoint name ("model.layers.L." or V4's
// "layers.L."), or -1; whether it is the token embedding's.
int layer_of_param(const std::string& name);
bool is_embedding_param(const std::string& name);

// V4's passes with mHC streams (model/block_v4.cc), called by the above.
void v4_embed_forward(const Model& m, ModelState& state);
void v4_embed_backward(const Model& m, ModelState& state, ModelParams& grads, const Tensor& dh);
void v4_layer_forward(const Model& m, int layer, ModelState& state);
void v4_layer_backward(const Model& m, int layer, ModelState& state, ModelParams& grads, Tensor& dh);
void v4_head_collapse_forward(const Model& m, ModelState& state);
// Cached inference over S sequences' n new tokens: h [S·n, n_streams·d] in
// and out through layer `layer`; the head's collapse of such rows into y.
void v4_layer_cached(const Model& m, int layer, const RopeTable& rope, const std::vector<AttentionKvCache*>& caches,
                     const int64_t* ids, int64_t n, Tensor& h);
void v4_collapse_rows(const Model& m, const Tensor& h, int64_t rows, Tensor& y);
// h [rows, n_streams·d] = the embedded rows e [rows, d] in every stream.
void v4_streams_of(const Model& m, const Tensor& e, int64_t rows, Tensor& h);
void v4_head_collapse_backward(const Model& m, ModelState& state, ModelParams& grads, const float* dy, Tensor& dh);

}  // namespace memoe
