// Model directories: config.json + model.safetensors with the tensor names
// of spec §6. Loading checks every tensor's presence and shape.
#pragma once
#include <string>

#include "io/safetensors.h"
#include "model/model.h"

namespace memoe {

// Writes DIR/config.json and DIR/model.safetensors (each atomically),
// creating DIR. Float weights are stored as `dtype` (F32 or BF16).
void save_model(const Model& m, const std::string& dir, DType dtype = DType::F32);

// Reads a model directory; any missing or misshapen tensor is an error
// naming it. A run's RUN/checkpoints/latest is accepted too.
Model load_model(const std::string& dir);

// The model directory that `path` names: itself, or, for an older run's
// checkpoints/latest file holding a checkpoint's name, that checkpoint.
std::string resolve_model_dir(const std::string& path);

}  // namespace memoe
