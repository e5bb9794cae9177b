#include "kernels/engram_hash.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <unordered_set>
#include <utility>

#include <omp.h>

#include "core/error.h"
#include "core/numpy_random.h"
#include "kernels/prefetch.h"

namespace memoe {
namespace {

constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();
// Seed stride between Engram layers in DeepSeek's reference code.
constexpr int64_t kLayerSeedStride = 10007;

__extension__ typedef unsigned __int128 u128;

uint64_t mul_mod(uint64_t a, uint64_t b, uint64_t mod) {
  return static_cast<uint64_t>(static_cast<u128>(a) * b % mod);
}

uint64_t pow_mod(uint64_t base, uint64_t exp, uint64_t mod) {
  uint64_t result = 1;
  base %= mod;
  for (; exp != 0; exp >>= 1) {
    if (exp & 1u) result = mul_mod(result, base, mod);
    base = mul_mod(base, base, mod);
  }
  return result;
}

// Miller-Rabin with the first 12 prime bases: deterministic for all 64-bit n.
bool is_prime(uint64_t n) {
  constexpr uint64_t kBases[] = {2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37};
  if (n < 2) return false;
  for (uint64_t p : kBases) {
    if (n % p == 0) return n == p;
  }
  uint64_t d = n - 1;
  int s = 0;
  for (; (d & 1u) == 0; d >>= 1) ++s;
  for (uint64_t a : kBases) {
    uint64_t x = pow_mod(a, d, n);
    if (x == 1 || x == n - 1) continue;
    bool composite = true;
    for (int r = 1; r < s && composite; ++r) {
      x = mul_mod(x, x, n);
      if (x == n - 1) composite = false;
    }
    if (composite) return false;
  }
  return true;
}

int64_t next_unused_prime(int64_t start, const std::unordered_set<int64_t>& used) {
  for (int64_t candidate = start + 1;; ++candidate) {
    if (is_prime(static_cast<uint64_t>(candidate)) && used.count(candidate) == 0) return candidate;
  }
}

// Explicitly vectorised: left to -O2, this runtime-length loop stays scalar
// and the backward runs about 4x slower.
void add_row(float* __restrict dst, const float* __restrict src, size_t n) {
#pragma omp simd
  for (size_t c = 0; c < n; ++c) dst[c] += src[c];
}

}  // namespace

std::vector<int64_t> engram_hash_multipliers(int64_t compressed_vocab, int max_ngram, int64_t seed, int layer_id) {
  MEMOE_CHECK(compressed_vocab >= 1, "engram: compressed vocabulary size must be >= 1, got ", compressed_vocab);
  MEMOE_CHECK(max_ngram >= 2, "engram: max_ngram_size must be >= 2, got ", max_ngram);
  MEMOE_CHECK(seed >= 0, "engram: seed must be >= 0, got ", seed);
  MEMOE_CHECK(layer_id >= 0, "engram: layer id must be >= 0, got ", layer_id);
  const int64_t layer_offset = kLayerSeedStride * layer_id;  // < 2^46: no overflow
  MEMOE_CHECK(seed <= kInt64Max - layer_offset, "engram: seed ", seed, " + 10007 * layer ", layer_id,
              " overflows int64");
  // Half the largest multiplier for which id * m < 2^63 for every id < V'.
  const int64_t half_bound = std::max<int64_t>(1, (kInt64Max / compressed_vocab) / 2);
  NumpyRng rng(static_cast<uint64_t>(seed + layer_offset));
  std::vector<int64_t> multipliers = rng.integers(0, half_bound, static_cast<size_t>(max_ngram));
  for (int64_t& m : multipliers) m = 2 * m + 1;
  return multipliers;
}

std::vector<std::vector<int64_t>> engram_table_primes(const std::vector<int>& layer_ids, int max_ngram, int n_head,
                                                      const std::vector<int64_t>& table_sizes) {
  MEMOE_CHECK(max_ngram >= 2, "engram: max_ngram_size must be >= 2, got ", max_ngram);
  MEMOE_CHECK(n_head >= 1, "engram: n_head_per_ngram must be >= 1, got ", n_head);
  MEMOE_CHECK(table_sizes.size() == static_cast<size_t>(max_ngram - 1), "engram: table_sizes has ",
              table_sizes.size(), " entries, expected max_ngram_size - 1 = ", max_ngram - 1);
  for (int64_t size : table_sizes) {
    // The cap keeps the prime search far from int64 overflow.
    MEMOE_CHECK(size >= 1 && size <= (int64_t{1} << 60), "engram: table size ", size, " out of range [1, 2^60]");
  }
  std::unordered_set<int64_t> used;
  std::vector<std::vector<int64_t>> all_primes;
  all_primes.reserve(layer_ids.size());
  for (int layer : layer_ids) {
    MEMOE_CHECK(layer >= 0, "engram: layer id must be >= 0, got ", layer);
    std::vector<int64_t> primes;
    primes.reserve(static_cast<size_t>(max_ngram - 1) * static_cast<size_t>(n_head));
    for (int n = 2; n <= max_ngram; ++n) {
      int64_t start = table_sizes[static_cast<size_t>(n - 2)] - 1;
      for (int head = 0; head < n_head; ++head) {
        const int64_t p = next_unused_prime(start, used);
        used.insert(p);
        primes.push_back(p);
        start = p;
      }
    }
    all_primes.push_back(std::move(primes));
  }
  return all_primes;
}

void engram_hash_rows(const int64_t* compressed_ids, int64_t batch, int64_t seq_len, int64_t compressed_pad,
                      const int64_t* multipliers, int max_ngram, const int64_t* primes, int n_head, int64_t* rows) {
  MEMOE_CHECK(batch >= 0 && seq_len >= 0, "engram_hash_rows: bad shape [", batch, ", ", seq_len, "]");
  MEMOE_CHECK(max_ngram >= 2, "engram_hash_rows: max_ngram_size must be >= 2, got ", max_ngram);
  MEMOE_CHECK(n_head >= 1, "engram_hash_rows: n_head_per_ngram must be >= 1, got ", n_head);
  MEMOE_CHECK(multipliers != nullptr && primes != nullptr, "engram_hash_rows: null multipliers or primes");
  const int64_t n_tokens = batch * seq_len;
  if (n_tokens == 0) return;
  MEMOE_CHECK(compressed_ids != nullptr && rows != nullptr, "engram_hash_rows: null ids or rows");

  // Largest id whose product with every multiplier stays in int64; valid
  // multipliers (drawn for V') admit every id < V'.
  int64_t max_id = kInt64Max;
  for (int k = 0; k < max_ngram; ++k) {
    MEMOE_CHECK(multipliers[k] > 0, "engram_hash_rows: multiplier ", k, " is ", multipliers[k], ", must be > 0");
    max_id = std::min(max_id, kInt64Max / multipliers[k]);
  }
  const int n_tables = (max_ngram - 1) * n_head;
  std::vector<int64_t> offsets(static_cast<size_t>(n_tables));
  int64_t total = 0;
  for (int i = 0; i < n_tables; ++i) {
    MEMOE_CHECK(primes[i] > 0, "engram_hash_rows: table size ", i, " is ", primes[i], ", must be > 0");
    MEMOE_CHECK(total <= kInt64Max - primes[i], "engram_hash_rows: table sizes overflow int64");
    offsets[static_cast<size_t>(i)] = total;
    total += primes[i];
  }
  MEMOE_CHECK(compressed_pad >= 0 && compressed_pad <= max_id, "engram_hash_rows: compressed pad id ",
              compressed_pad, " outside [0, ", max_id, "]");
  for (int64_t i = 0; i < n_tokens; ++i) {
    const int64_t c = compressed_ids[i];
    MEMOE_CHECK(c >= 0 && c <= max_id, "engram_hash_rows: compressed id ", c, " at position ", i, " outside [0, ",
                max_id, "]");
  }

#pragma omp parallel for schedule(static) if (n_tokens > 256)
  for (int64_t i = 0; i < n_tokens; ++i) {
    const int64_t t = i % seq_len;
    const int64_t* seq = compressed_ids + (i - t);  // start of this token's sequence
    int64_t* out = rows + i * n_tables;
    // mix_n extends mix_{n-1} by one more (older) token, so build it up.
    int64_t mix = seq[t] * multipliers[0];
    for (int n = 2; n <= max_ngram; ++n) {
      const int k = n - 1;
      const int64_t c = t >= k ? seq[t - k] : compressed_pad;
      mix ^= c * multipliers[k];
      for (int head = 0; head < n_head; ++head) {
        const int idx = (n - 2) * n_head + head;
        out[idx] = offsets[static_cast<size_t>(idx)] + mix % primes[idx];
      }
    }
  }
}

void engram_gather(WeightMatrix table, int64_t row_width, const int64_t* rows, int64_t n_tokens,
                   int64_t rows_per_token, float* out) {
  MEMOE_CHECK(row_width >= 1, "engram_gather: row width must be >= 1, got ", row_width);
  MEMOE_CHECK(n_tokens >= 0 && rows_per_token >= 0, "engram_gather: bad shape [", n_tokens, ", ", rows_per_token,
              "]");
  if (n_tokens == 0 || rows_per_token == 0) return;
  MEMOE_CHECK((table.f32 || table.bf16) && rows != nullptr && out != nullptr, "engram_gather: null pointer");
  // Rows lie at random in a table that may be far larger than the caches:
  // each is asked for kGatherAhead slots before it is copied, so several
  // memory reads are in flight at once instead of one at a time.
  const int64_t slots = n_tokens * rows_per_token;
  const size_t row_bytes = size_t(row_width) * (table.f32 ? sizeof(float) : sizeof(uint16_t));
#pragma omp parallel if (slots * row_width > 65536)
  {
    const int threads = omp_get_num_threads(), me = omp_get_thread_num();
    const int64_t begin = slots * me / threads, end = slots * (me + 1) / threads;
    for (int64_t slot = begin; slot < end; ++slot) {
      if (slot + kGatherAhead < end) prefetch_bytes(table.address(rows[slot + kGatherAhead] * row_width), row_bytes);
      table.copy_row(rows[slot] * row_width, row_width, out + slot * row_width);
    }
  }
}

void engram_gather_backward(const float* d_out, const int64_t* rows, int64_t n_tokens, int64_t rows_per_token,
                            int64_t row_width, SparseRowGrad* grad) {
  MEMOE_CHECK(grad != nullptr, "engram_gather_backward: null gradient");
  MEMOE_CHECK(row_width >= 1, "engram_gather_backward: row width must be >= 1, got ", row_width);
  MEMOE_CHECK(n_tokens >= 0 && rows_per_token >= 0, "engram_gather_backward: bad shape [", n_tokens, ", ",
              rows_per_token, "]");
  if (grad->rows.empty()) {
    grad->row_width = row_width;
    grad->grad.clear();
  }
  MEMOE_CHECK(grad->row_width == row_width, "engram_gather_backward: row width ", row_width,
              " differs from the accumulated gradient's ", grad->row_width);
  MEMOE_CHECK(grad->grad.size() == grad->rows.size() * static_cast<size_t>(row_width),
              "engram_gather_backward: accumulated gradient has ", grad->grad.size(), " values for ",
              grad->rows.size(), " rows");
  const int64_t n_slots = n_tokens * rows_per_token;
  if (n_slots == 0) return;
  MEMOE_CHECK(d_out != nullptr && rows != nullptr, "engram_gather_backward: null pointer");

  // (row, slot) pairs sorted by row, then slot: each row's contributions form
  // one run, summed in a fixed order.
  std::vector<std::pair<int64_t, int64_t>> reads(static_cast<size_t>(n_slots));
  for (int64_t s = 0; s < n_slots; ++s) {
    MEMOE_CHECK(rows[s] >= 0, "engram_gather_backward: negative row ", rows[s], " at slot ", s);
    reads[static_cast<size_t>(s)] = {rows[s], s};
  }
  std::sort(reads.begin(), reads.end());

  std::vector<size_t> run_begin;  // run r spans reads[run_begin[r], run_begin[r+1])
  for (size_t i = 0; i < reads.size(); ++i) {
    if (i == 0 || reads[i].first != reads[i - 1].first) run_begin.push_back(i);
  }
  const size_t n_runs = run_begin.size();
  run_begin.push_back(reads.size());

  // Merge the new rows into the old (both ascending); remember where each run
  // lands in the merged gradient.
  const std::vector<int64_t>& old_rows = grad->rows;
  std::vector<int64_t> merged_rows;
  merged_rows.reserve(old_rows.size() + n_runs);
  std::vector<int64_t> old_dest(old_rows.size()), run_dest(n_runs);
  size_t a = 0, r = 0;
  while (a < old_rows.size() || r < n_runs) {
    const int64_t next_new = r < n_runs ? reads[run_begin[r]].first : kInt64Max;
    const int64_t dest = static_cast<int64_t>(merged_rows.size());
    if (a < old_rows.size() && old_rows[a] <= next_new) {
      if (r < n_runs && old_rows[a] == next_new) run_dest[r++] = dest;
      old_dest[a] = dest;
      merged_rows.push_back(old_rows[a++]);
    } else {
      run_dest[r++] = dest;
      merged_rows.push_back(next_new);
    }
  }

  const size_t width = static_cast<size_t>(row_width);
  std::vector<float> merged_grad;
  if (merged_rows.size() == old_rows.size()) {
    merged_grad = std::move(grad->grad);  // every row already present: add in place
  } else if (old_rows.empty()) {
    // Reuse the caller's capacity: a fresh multi-GB buffer per step would
    // spend most of the backward in the kernel zeroing new pages.
    merged_grad = std::move(grad->grad);
    merged_grad.assign(merged_rows.size() * width, 0.0f);
  } else {
    merged_grad.assign(merged_rows.size() * width, 0.0f);
    for (size_t i = 0; i < old_rows.size(); ++i) {
      std::copy_n(grad->grad.data() + i * width, width, merged_grad.data() + static_cast<size_t>(old_dest[i]) * width);
    }
  }

  // Runs write disjoint rows; dynamic scheduling because run lengths are very
  // uneven (pad n-grams and frequent n-grams hit one row many times).
#pragma omp parallel for schedule(dynamic, 64)
  for (size_t run = 0; run < n_runs; ++run) {
    float* dst = merged_grad.data() + static_cast<size_t>(run_dest[run]) * width;
    for (size_t i = run_begin[run]; i < run_begin[run + 1]; ++i) {
      const float* src = d_out + static_cast<size_t>(reads[i].second) * width;
      add_row(dst, src, width);
    }
  }
  grad->rows = std::move(merged_rows);
  grad->grad = std::move(merged_grad);
}

}  // namespace memoe
