// Engram hashing and table access (spec §5.2): the multipliers and prime table
// sizes that define a layer's hash, the n-gram -> table-row hash itself, and
// the gather / sparse scatter-add over the layer's stacked embedding table.
// Row ids depend on token ids only, so callers can compute them (and prefetch
// the rows) before the forward pass reaches the layer.
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/weight_matrix.h"

namespace memoe {

// The N odd hash multipliers of Engram layer `layer_id` (its index in the
// stack), drawn as DeepSeek's reference code draws them:
// hb = max(1, floor(floor((2^63-1)/V')/2)); v = default_rng(seed + 10007*layer)
// .integers(0, hb, N); m = 2v + 1. Bit-exact with numpy 1.24.
std::vector<int64_t> engram_hash_multipliers(int64_t compressed_vocab, int max_ngram, int64_t seed, int layer_id);

// The distinct prime table sizes of every Engram layer, in layer_ids order;
// each entry holds (N-1)*K primes, n-major then head. table_sizes has N-1
// entries (one base size per n-gram order n = 2..N).
std::vector<std::vector<int64_t>> engram_table_primes(const std::vector<int>& layer_ids, int max_ngram, int n_head,
                                                      const std::vector<int64_t>& table_sizes);

// Row ids for one Engram layer. compressed_ids: [batch, seq_len];
// multipliers: [max_ngram]; primes: [(N-1)*n_head], the layer's sub-table sizes
// in stored order. rows: [batch*seq_len, (N-1)*n_head], each row already
// offset into the layer's one stacked table (offset = sum of the primes stored
// before it), so every row is < sum(primes). Windows stay inside their
// sequence: positions before the start read compressed_pad.
// Throws memoe::Error on negative ids or ids so large that id * multiplier
// would overflow int64 (i.e. ids outside the compressed vocabulary).
void engram_hash_rows(const int64_t* compressed_ids, int64_t batch, int64_t seq_len, int64_t compressed_pad,
                      const int64_t* multipliers, int max_ngram, const int64_t* primes, int n_head, int64_t* rows);

// out[t, j*D:(j+1)*D] = table[rows[t, j], :] with D = row_width; rows is
// [n_tokens, rows_per_token], out is [n_tokens, rows_per_token*D]. Rows are
// trusted to be inside the table (engram_hash_rows guarantees it when the
// table has sum(primes) rows; the loader must check that). bf16 rows are
// widened. Parallel over tokens.
void engram_gather(WeightMatrix table, int64_t row_width, const int64_t* rows, int64_t n_tokens,
                   int64_t rows_per_token, float* out);

// Gradient of a table restricted to the rows that were read.
struct SparseRowGrad {
  std::vector<int64_t> rows;  // unique, ascending
  std::vector<float> grad;    // [rows.size(), row_width]
  int64_t row_width = 0;
};

// Backward of engram_gather: adds d_out (shaped like engram_gather's out) into
// grad, summing over every (token, slot) that read a row and merging with rows
// already present. Rows never read do not appear. Deterministic: each row sums
// its contributions in (token, slot) order whatever the thread count.
// To start a new step without reallocating, clear grad->rows and grad->grad
// (clear() keeps the capacity, which is then reused).
void engram_gather_backward(const float* d_out, const int64_t* rows, int64_t n_tokens, int64_t rows_per_token,
                            int64_t row_width, SparseRowGrad* grad);

}  // namespace memoe
