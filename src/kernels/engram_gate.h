// Engram's context gate (spec §5.3) on normed keys and queries:
// score_i = <key_i, query_i> / sqrt(d), alpha_i = sigmoid(signed_sqrt(score_i)),
// signed_sqrt(s) = sign(s) sqrt(max(|s|, 1e-6)); the layer then scales the
// value rows by alpha (scale_rows in kernels/elementwise.h).
#pragma once
#include <cstdint>

namespace memoe {

// key, query: [n, d]. Writes score[n] and alpha[n].
void engram_gate_forward(const float* key, const float* query, int64_t n, int64_t d, float* score, float* alpha);

// Backward of u = alpha * value given du: writes (overwrites) dvalue = alpha
// du and the gradients of the gate's inputs, dkey and dquery, all [n, d].
// score and alpha are the forward's; the signed root's floor passes no
// gradient.
void engram_gate_backward(const float* du, const float* value, const float* key, const float* query,
                          const float* score, const float* alpha, int64_t n, int64_t d, float* dvalue, float* dkey,
                          float* dquery);

}  // namespace memoe
