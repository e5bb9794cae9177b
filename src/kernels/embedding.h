// Token embeddings: table rows looked up by token id, their gradient
// scattered back, and id remapping (the Engram token compression).
#pragma once
#include <cstdint>

#include "kernels/weight_matrix.h"

namespace memoe {

// out[i, :] = table[ids[i], :] for n ids, rows of width d (bf16 rows widened).
// Ids are trusted (the model checks them against the vocabulary first).
void embedding_forward(WeightMatrix table, const int64_t* ids, int64_t n, int64_t d, float* out);

// dtable[ids[i], :] += dout[i, :]. A row read by several tokens sums their
// rows in token order, whatever the thread count (threads split columns).
void embedding_backward(const float* dout, const int64_t* ids, int64_t n, int64_t d, float* dtable);

// out[i] = map[ids[i]] for n ids, or out[i] = ids[i] when map is null.
void remap_ids(const int64_t* ids, int64_t n, const int64_t* map, int64_t* out);

}  // namespace memoe
