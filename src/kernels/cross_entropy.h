// Fused softmax cross-entropy over the vocabulary.
#pragma once
#include <cstdint>

namespace memoe {

// Mean of -log softmax(logits[i])[target[i]] over rows whose target >= 0.
// When dlogits is not null it receives d(mean loss)/d(logits) (overwritten;
// ignored rows get zeros). Targets must be < vocab (checked by the caller).
// With dlogits null and dlogits_bf16 not, the gradient is written rounded
// to bf16 instead (float_to_bf16 of each value): all a bf16 LM head reads
// of it, at half the bytes.
double cross_entropy(const float* logits, const int64_t* targets, int64_t n, int64_t vocab, float* dlogits,
                     uint16_t* dlogits_bf16 = nullptr);

}  // namespace memoe
