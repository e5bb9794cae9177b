// Rotary embedding on interleaved pairs (x[2i], x[2i+1]) — spec §3.
#pragma once
#include <cstdint>
#include <vector>

namespace memoe {

// cos/sin of the angle t·f_i for positions 0..seq_len-1 and pairs 0..dim/2-1.
struct RopeTable {
  int64_t seq_len = 0;
  int64_t dim = 0;  // rotary width (even)
  std::vector<float> cos, sin;  // [seq_len, dim/2]
};

// Builds the table from per-pair frequencies; angles are formed in float64.
RopeTable make_rope_table(const std::vector<double>& freqs, int64_t seq_len);

// The table's rows at the given positions, as a table of its own: what
// rotating rows that sit at those positions (new tokens of one or several
// sequences) with rope_apply needs.
RopeTable rope_at(const RopeTable& table, const std::vector<int64_t>& positions);

// Rotates, in place, the slice [offset, offset+table.dim) of each head of
// x laid out [batch, seq_len, heads, head_stride]. inverse=true rotates by
// the negative angle, which is exactly the backward pass of the rotation.
void rope_apply(float* x, int64_t batch, int64_t seq_len, int64_t heads, int64_t head_stride, int64_t offset,
                const RopeTable& table, bool inverse);

}  // namespace memoe
