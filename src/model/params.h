// Parameters are plain Tensors held in one struct per layer. Each struct
// lists its tensors under their checkpoint names (spec §6) through visit();
// gradients use the same struct types, so a name finds both. Tensors that a
// gradient struct leaves empty (e.g. Engram tables, updated sparsely) are
// skipped by visitors that ask for non-empty tensors only.
#pragma once
#include <functional>
#include <string>

#include "core/tensor.h"

namespace memoe {

using ParamVisitor = std::function<void(const std::string& name, Tensor& tensor)>;

}  // namespace memoe
