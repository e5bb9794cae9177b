// Model directories: config.json + model.safetensors with the tensor names
// of spec §6. Loading checks every tensor's presence and shape.
#pragma once
#include <map>
#include <functional>
#include <string>

#include "io/safetensors.h"
#include "io/safetensors_set.h"
#include "model/model.h"

namespace memoe {

// Writes DIR/config.json and DIR/model.safetensors (each atomically),
// creating DIR. Float weights are stored as `dtype` (F32 or BF16).
void save_model(const Model& m, const std::string& dir, DType dtype = DType::F32);
// The tensors whose names `keep` accepts (the integer ones — the token map,
// the Engram hashes — included) into one safetensors file, atomically: one
// shard of a sharded checkpoint. `pieces` adds flat element ranges of
// tensors (F32) as NAME[begin:end] (a sharded Engram table's own rows).
using TensorPieces = std::map<std::string, std::pair<int64_t, int64_t>>;
void save_model_tensors(const Model& m, const std::string& file, const std::function<bool(const std::string&)>& keep,
                        DType dtype = DType::F32, const TensorPieces& pieces = {});

// Where a loaded model's weights live.
enum class WeightStorage {
  // Every tensor converted into fp32 memory the model owns: training, and
  // exact fp32 inference from a checkpoint stored in any float type.
  copied,
  // Inference: the matrices, the embeddings and the Engram tables are
  // read-only views of the mapped model.safetensors in its stored dtype (F32
  // or BF16), never copied (a BF16 checkpoint's products then run in bf16
  // whatever the precision); the small tensors (norms, biases, the short
  // conv, the router) are read into fp32.
  mapped,
};
// With mapped weights, where the Engram tables live: in the mapping (rows
// come from the page cache, or the disk, as they are touched), or copied
// into memory the model owns, as stored.
enum class TableStorage { mapped, resident };
const char* table_storage_name(TableStorage s);  // "mmap" or "resident"
TableStorage parse_table_storage(const std::string& name);  // one line for anything else

struct LoadOptions {
  WeightStorage weights = WeightStorage::copied;
  TableStorage engram_tables = TableStorage::mapped;
  // Mapped tables: how the rows of the tokens about to be fed are read
  // ahead (Model::engram_prefetcher). The tables are also marked as read at
  // random, so a fault reads its own page and not the 128 KiB around it.
  PrefetchMethod engram_prefetch = PrefetchMethod::off;
};

// Reads a model directory, its weights in one model.safetensors or sharded
// (model.safetensors.index.json); any missing or misshapen tensor is an error
// naming it. A run's RUN/checkpoints/latest is accepted too.
Model load_model(const std::string& dir, const LoadOptions& options = {});

// The model directory that `path` names: itself, or, for an older run's
// checkpoints/latest file holding a checkpoint's name, that checkpoint.
std::string resolve_model_dir(const std::string& path);

}  // namespace memoe
