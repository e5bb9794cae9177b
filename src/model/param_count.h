// Parameter, FLOP and memory accounting from a config alone (no weights are
// allocated, so the 1T preset can be sized on a laptop).
#pragma once
#include <cstdint>
#include <vector>

#include "io/config.h"
#include "kernels/linear.h"

namespace memoe {

struct ParamCount {
  int64_t total = 0;         // every parameter, Engram tables included
  int64_t active = 0;        // read for one token: top-k + shared experts, the rows an Engram lookup reads,
                             // embedding and LM head counted whole (as DeepSeek counts them)
  int64_t engram_table = 0;  // Engram embedding-table parameters (all layers)
  int64_t embedding = 0;     // embed_tokens + lm_head (once when tied)
  int64_t bf16_copies = 0;   // parameters that bf16 precision keeps a bf16 copy of (the matrices of its products)
  int64_t active_matmul = 0; // weights of the matrix products one token runs (the LM head whole, no embedding
                             // rows): what a decode step streams from memory
  double forward_flops_per_token = 0;  // matmuls of the active weights + attention at the given context
  double train_flops_per_token = 0;    // forward + backward (3x forward)
  // The forward FLOPs per token of each layer and of the LM head (their sum
  // is forward_flops_per_token): what balances pipeline stages.
  std::vector<double> layer_forward_flops;
  double head_forward_flops = 0;
  // V4: the multi-token-prediction blocks' parameters (in total and active;
  // DeepSeek's published totals leave them out) and the token-id routing
  // tables (tid2eid: fixed integers, counted in neither).
  int64_t mtp = 0, mtp_active = 0;
  int64_t hash_routing_entries = 0;
};

// V4's decode cache in fp32 bytes, over every backbone layer: a ring of
// sliding_window keys a layer (fixed, whatever the context) plus, on
// compressed layers, one key per compress_ratio tokens (and the indexer's).
struct V4CacheBytes {
  double window = 0;     // the rings: independent of the context
  double per_token = 0;  // compressed keys, per token of context
};
V4CacheBytes v4_cache_bytes(const ModelConfig& cfg);

// The V4 branches of count_params and activation_bytes (param_count_v4.cc).
ParamCount count_v4_params(const ModelConfig& cfg, int64_t seq_len);
double v4_activation_bytes(const ModelConfig& cfg, int64_t batch, int64_t seq_len);

// seq_len: training sequence length; attention FLOPs use its causal mean context.
ParamCount count_params(const ModelConfig& cfg, int64_t seq_len);

// Bytes the engine holds for one training step of batch x seq_len: the saved
// activations of the forward pass plus the backward pass's transient buffers.
// In bf16 precision SwiGLU's h and the LM head's dlogits are kept in bf16,
// and the products' bf16 scratch is added.
double activation_bytes(const ModelConfig& cfg, int64_t batch, int64_t seq_len, Precision precision = Precision::fp32);

// Bytes of a full training state: fp32 weights, dense gradients (Engram
// table gradients are sparse and counted as the rows one step can touch),
// AdamW's two moments and the activations; in bf16 precision also the
// weights' bf16 copies.
double training_state_bytes(const ModelConfig& cfg, int64_t batch, int64_t seq_len,
                            Precision precision = Precision::fp32);

}  // namespace memoe
