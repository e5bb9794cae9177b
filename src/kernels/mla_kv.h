// MLA's per-head keys and values (spec §3): each token's decompressed rows
// kv[n, H, nope + dv] and its one rotary key kpe[n, rope], shared by all
// heads, laid out as attention's k[n, H, nope + rope] and v[n, H, dv].
#pragma once
#include <cstdint>

namespace memoe {

// k[i, h] = (kv[i, h, :nope], kpe[i]), v[i, h] = kv[i, h, nope:]. Overwrites k and v.
void mla_expand_kv(const float* kv, const float* kpe, int64_t n, int64_t heads, int64_t nope, int64_t rope,
                   int64_t v_dim, float* k, float* v);

// Backward: dkv[i, h] = (dk[i, h, :nope], dv[i, h]) (overwritten) and
// dkpe[i * dkpe_ld + j] += sum over heads, in head order, of dk[i, h, nope + j].
void mla_expand_kv_backward(const float* dk, const float* dv, int64_t n, int64_t heads, int64_t nope, int64_t rope,
                            int64_t v_dim, float* dkv, float* dkpe, int64_t dkpe_ld);

}  // namespace memoe
