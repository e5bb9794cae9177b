// Engram conditional memory (spec §5): hashed n-gram rows gathered from one
// stacked table per layer, gated into the residual stream, then a dilated
// causal short convolution. The pieces (hashing, gather, gate, conv) stay
// separate functions so that the V4.1 variant can swap some of them.
#pragma once
#include <vector>

#include "io/config.h"
#include "io/page_prefetch.h"
#include "kernels/engram_hash.h"
#include "model/params.h"

namespace memoe {

// The integer side of one Engram layer: its hash, stored in the checkpoint.
struct EngramHash {
  std::vector<int64_t> multipliers;  // [N]
  std::vector<int64_t> primes;       // [(N-1)*K], n-major then head
  int64_t compressed_pad = 0;        // token_map[pad_id]: what windows read before t = 0
  int64_t table_rows() const;        // sum of primes
};

struct EngramParams {
  Tensor embedding;                  // [table_rows, D]
  Tensor value_proj, value_bias;     // [d, E], [d]
  Tensor key_proj, key_bias;         // [d, E], [d]   (branch 0; hc_mult is 1)
  Tensor norm1, norm2;               // [d]: key norm, query norm
  Tensor conv_weight;                // [d, 1, kernel]
  Tensor conv_norm;                  // [d]
  // Gradient structs only: the table's gradient, restricted to rows read.
  // Their `embedding` stays empty.
  SparseRowGrad embedding_grad;

  void allocate(const ModelConfig& cfg, int64_t table_rows, bool with_table);
  void visit(const std::string& prefix, const ParamVisitor& f);  // prefix "model.layers.{i}.engram."
  // Gradient structs: the table's sparse gradient under the table's name.
  void visit_sparse_grads(const std::string& prefix, const SparseRowGradVisitor& f);
};

struct EngramCache {
  std::vector<int64_t> rows;  // [N, (N-1)*K]: rows of the table read (the layer's own, or a fetched one)
  // Rows read from a fetched table (EngramRowSource): the global id of
  // each of its rows, ascending. Empty: rows index the layer's own table.
  std::vector<int64_t> held_rows;
  Tensor e;                   // gathered rows [N, E]
  Tensor key_pre, key_rstd, key;      // e @ Wk^T + b, its RMSNorm
  Tensor query, query_rstd;           // RMSNorm(h)
  Tensor gate_score, alpha;           // s and sigmoid(signed sqrt(s)), [N]
  Tensor value, u;                    // e @ Wv^T + b, alpha * value
  Tensor conv_in, conv_rstd, conv_z;  // RMSNorm(u), conv pre-activation
};

// Where an Engram layer's rows come from when this process does not hold
// the whole table: a sharded-table run (parallel/engram_shard.h) fetches them
// from the ranks that own them. The layer never knows ranks.
class EngramRowSource {
 public:
  virtual ~EngramRowSource() = default;
  // rows: the layer's global row ids of this pass. Returns a table holding
  // them, rewrites rows into that table's row indices and sets held[i] to
  // the global id of its row i (ascending).
  virtual const Tensor& fetch(int layer, const EngramParams& p, std::vector<int64_t>& rows,
                              std::vector<int64_t>& held) = 0;
};

// The global table rows a pass over compressed ids [batch, seq_len] reads:
// [B*L, tables_per_layer] (what engram_forward gathers).
std::vector<int64_t> engram_rows_of(const ModelConfig& cfg, const EngramHash& hash, const int64_t* compressed_ids,
                                    int64_t batch, int64_t seq_len);

// out = Engram(h) for h [B*L, d] and compressed ids [B*L] (the token map
// already applied). Overwrites out; the caller adds it to the residual.
// source null: the rows come from p's own table.
void engram_forward(const ModelConfig& cfg, const EngramHash& hash, const EngramParams& p, const float* h,
                    const int64_t* compressed_ids, int64_t batch, int64_t seq_len, EngramCache& cache, float* out,
                    EngramRowSource* source = nullptr, int layer = 0);
// One sequence's Engram state at inference (spec §5.6): the short conv's
// inputs of the last (kernel-1)·N positions (zeros before the start). The
// hash's last N-1 compressed ids are the caller's (they are the sequence's).
struct EngramDecodeState {
  std::vector<float> conv_history;  // [(kernel-1)*N, d], oldest first
};

// Engram over n new tokens of each of S sequences (S = states.size()), the
// tokens of sequence s at its positions first_s..first_s+n-1: window_ids
// [S, N-1+n] holds each sequence's compressed ids of positions
// first_s-(N-1)..first_s+n-1 (compressed_pad before its start), h [S*n, d];
// each state's history is read and moved on by n. Overwrites out [S*n, d].
// Equal to engram_forward over each whole sequence at those positions.
void engram_cached(const ModelConfig& cfg, const EngramHash& hash, const EngramParams& p, const float* h,
                   const int64_t* window_ids, int64_t n, const std::vector<EngramDecodeState*>& states, float* out);
// The table rows engram_cached reads for those windows: [S*n, tables_per_layer].
std::vector<int64_t> engram_window_rows(const ModelConfig& cfg, const EngramHash& hash, const int64_t* window_ids,
                                        int64_t sequences, int64_t n);
// Where row r of a layer's table lies in memory (a bf16 table's row is half
// the bytes): for reading ahead.
MemoryRange engram_row_memory(const EngramParams& p, int64_t row);

// Adds into grads (table rows sparsely) and dh.
void engram_backward(const ModelConfig& cfg, const EngramParams& p, const float* h, const EngramCache& cache,
                     const float* dout, int64_t batch, int64_t seq_len, EngramParams& grads, float* dh);

}  // namespace memoe
