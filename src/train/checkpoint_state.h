// Training checkpoints: a model directory (config.json, model.safetensors,
// tokenizer.model when there is one) plus optimizer.safetensors (AdamW
// moments) and state.json (step, data cursor, seed). Written into a
// temporary directory and renamed into place, so a checkpoint either exists
// whole or not at all.
#pragma once
#include <cstdint>
#include <string>

#include "model/model.h"
#include "train/adamw.h"

namespace memoe {

struct TrainState {
  int64_t step = 0;           // optimizer steps done
  uint64_t data_cursor = 0;   // DataLoader cursor: the sampling state
  uint64_t seed = 0;
  int64_t tokens_seen = 0;
};

// Writes RUN/checkpoints/step_XXXXXXXX and points RUN/checkpoints/latest at
// it; keeps the newest keep_last checkpoints. Returns the directory.
std::string save_checkpoint(const std::string& run_dir, const Model& model, AdamW& optimizer,
                            const TrainState& state, const std::string& tokenizer_file, int64_t keep_last);

// The model of a checkpoint is load_model(dir); these read the rest.
// The optimizer must have been built for that model.
void load_optimizer_state(const std::string& dir, AdamW& optimizer);
TrainState load_train_state(const std::string& dir);

}  // namespace memoe
