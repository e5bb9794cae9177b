// Training checkpoints: a model directory (config.json, model.safetensors,
// tokenizer.model when there is one) plus optimizer.safetensors (AdamW
// moments) and state.json (step, data cursor, seed); from a data-parallel
// run, the two safetensors files are sharded (io/safetensors_set.h). Written into a
// temporary directory and renamed into place, so a checkpoint either exists
// whole or not at all.
#pragma once
#include <cstdint>
#include <string>

#include "parallel/communicator.h"
#include "model/model.h"
#include "train/adamw.h"

namespace memoe {

struct TrainState {
  int64_t step = 0;           // optimizer steps done
  uint64_t data_cursor = 0;   // DataLoader cursor: the sampling state
  uint64_t seed = 0;
  int64_t tokens_seen = 0;
};

// How a data-parallel world holds the optimizer's moments: every rank all
// of them (plain data parallel), or each rank its own slices (ZeRO-1).
enum class MomentsLayout { replicated, sharded };

// Writes RUN/checkpoints/step_XXXXXXXX and points RUN/checkpoints/latest at
// it; keeps the newest keep_last checkpoints. Returns the directory.
// In a world of R > 1 ranks every rank calls it: each writes its shard of
// the weights (whole tensors, balanced by size) and of the moments (its
// slices, or with replicated moments those of its weights) into one
// temporary directory, and rank 0 then writes the indexes
// (model.safetensors.index.json, optimizer.safetensors.index.json), the
// config and the state and publishes the directory by renaming it. While it
// does, a rank waits at most write_timeout_s in one collective (<= 0: no
// limit; see Communicator::set_collective_timeout). With expert_shards E
// > 1 (expert parallel) each routed expert is written by the first EP
// group's rank holding it, world rank = its shard. With sharded_tables
// each rank writes its own rows of every Engram table (and their moments)
// as pieces NAME[begin:end]. With pipeline stages, `holders` is this
// rank's stage group (the ranks holding the same tensors): the shares above
// are cut within it, and every stage writes its own tensors (null: world).
std::string save_checkpoint(const std::string& run_dir, const Model& model, AdamW& optimizer,
                            const TrainState& state, const std::string& tokenizer_file, int64_t keep_last,
                            Communicator& world, MomentsLayout moments = MomentsLayout::replicated,
                            double write_timeout_s = 120, int expert_shards = 1, bool sharded_tables = false,
                            Communicator* holders = nullptr);

// The model of a checkpoint is load_model(dir); these read the rest.
// The optimizer must have been built for that model; it reads the moments
// of its own slices, whichever layout wrote them.
void load_optimizer_state(const std::string& dir, const Model& model, AdamW& optimizer);
TrainState load_train_state(const std::string& dir);

}  // namespace memoe
