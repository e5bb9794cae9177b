// Inference over a cache: one sequence's state (attention KV cache, Engram
// decode state, its compressed ids), fed new tokens a chunk at a time —
// prefill in chunks, then decode one token per step — with logits only for
// the positions asked for. Position by position it computes what
// model_forward computes over the whole sequence, up to fp32 summation order.
#pragma once
#include <cstdint>
#include <vector>

#include "model/model.h"

namespace memoe {

struct SequenceState {
  int64_t length = 0;                     // tokens fed so far
  std::vector<int64_t> compressed_ids;    // [length]: Engram's hash reads the last N-1
  std::vector<AttentionKvCache> attention;  // per layer
  std::vector<EngramDecodeState> engram;    // per layer (empty where no Engram)
  RopeTable rope;                         // positions 0..rope.seq_len-1, grown as needed

  int64_t cache_bytes() const;            // attention caches + Engram conv histories
};

SequenceState new_sequence(const Model& m);

// Which rows of logits a call returns.
enum class Logits { None, Last, All };

// Feeds n new tokens (ids) at positions state.length.., at most `chunk`
// (> 0) at a time, so that no more than one chunk's activations exist at
// once. logits becomes [n, V] (All), [1, V] for the last new token (Last),
// or is left empty (None).
void feed_tokens(const Model& m, SequenceState& state, const int64_t* ids, int64_t n, int64_t chunk, Logits which,
                 Tensor& logits);

// One decode step of several sequences together: ids[s] is sequence s's
// next token, each at its own position with its own cache; every
// per-token product runs once over all of them. logits becomes [S, V].
// Which sequences take part is the caller's choice at each step: one may
// join (after its own prefill) or leave between steps.
void decode_step(const Model& m, const std::vector<SequenceState*>& sequences, const int64_t* ids, Tensor& logits);

}  // namespace memoe
