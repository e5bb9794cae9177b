// How the commands that run inference (generate; later niah and the server)
// load a model: weights viewed in the mapped checkpoint (model/checkpoint.h,
// WeightStorage::mapped), and where the Engram tables live and how their
// rows are read ahead:
//   --engram-tables mmap|resident   (default mmap)
//   --prefetch off|madvise|reader   (default madvise)
// The defaults are what bench/tables_bench measured best (README, "Engram
// tables on disk").
#pragma once
#include <CLI/CLI.hpp>
#include <string>

#include "model/checkpoint.h"

namespace memoe::cli {

struct InferenceLoadOptions {
  std::string engram_tables = "mmap";
  std::string prefetch = "madvise";
};

void add_inference_load_options(CLI::App* cmd, InferenceLoadOptions& o);
// Loads `dir` for inference; bad option values are one line each.
Model load_for_inference(const std::string& dir, const InferenceLoadOptions& o);

}  // namespace memoe::cli
