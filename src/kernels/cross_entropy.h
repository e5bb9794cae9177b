// Fused softmax cross-entropy over the vocabulary.
#pragma once
#include <cstdint>

namespace memoe {

// Mean of -log softmax(logits[i])[target[i]] over rows whose target >= 0.
// When dlogits is not null it receives d(mean loss)/d(logits) (overwritten;
// ignored rows get zeros). Targets must be < vocab (checked by the caller).
double cross_entropy(const float* logits, const int64_t* targets, int64_t n, int64_t vocab, float* dlogits);

}  // namespace memoe
