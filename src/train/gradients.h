// Whole-model gradient utilities: the global norm (dense tensors and the
// sparse Engram table rows together), scaling, and a finiteness check.
#pragma once
#include "model/model.h"

namespace memoe {

// NaN/inf propagate. terms: where the addends go as well (not null).
double gradient_global_norm(ModelParams& grads, GradientNormTerms* terms = nullptr);
void scale_gradients(ModelParams& grads, float factor);

}  // namespace memoe
