#include "cli/inference_options.h"

namespace memoe::cli {

void add_inference_load_options(CLI::App* cmd, InferenceLoadOptions& o) {
  cmd->add_option("--engram-tables", o.engram_tables,
                  "Engram tables: mmap (read from the mapped checkpoint as rows are touched) or resident (copied "
                  "into memory)")
      ->capture_default_str();
  cmd->add_option("--prefetch", o.prefetch,
                  "read-ahead of mapped Engram rows: off, madvise (MADV_WILLNEED) or reader (threads touching the "
                  "pages)")
      ->capture_default_str();
}

Model load_for_inference(const std::string& dir, const InferenceLoadOptions& o) {
  LoadOptions load;
  load.weights = WeightStorage::mapped;
  load.engram_tables = parse_table_storage(o.engram_tables);
  load.engram_prefetch = parse_prefetch_method(o.prefetch);
  return load_model(dir, load);
}

}  // namespace memoe::cli
