// memoe logits --model DIR --ids 1,2,3[;4,5,6] --out FILE.npy: final logits
// [B, L, V] as float32, the interface other implementations compare against.
#include <cstdio>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/id_list.h"
#include "cli/precision_option.h"
#include "core/error.h"
#include "io/npy.h"
#include "model/checkpoint.h"

namespace memoe::cli {

namespace {
struct Options {
  std::string model, ids, out, precision;
};

void run(const Options& o) {
  const auto rows = parse_id_rows(o.ids);
  Model m = load_model(o.model);
  const int64_t B = int64_t(rows.size()), L = int64_t(rows[0].size()), V = m.config.vocab_size;
  std::vector<int64_t> ids;
  for (const auto& r : rows) ids.insert(ids.end(), r.begin(), r.end());
  check_token_ids(m.config, ids.data(), int64_t(ids.size()));
  apply_precision(m, o.precision, /*announce=*/false);  // stdout and stderr stay as they were
  ModelState state;
  model_forward(m, ids.data(), B, L, state);
  write_npy_f32(o.out, {B, L, V}, state.logits.data());
}
}  // namespace

void add_logits_command(CLI::App& app) {
  auto opts = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("logits", "Write the final logits [B, L, V] of token ids as float32 .npy");
  cmd->add_option("--model", opts->model, "model directory")->required();
  cmd->add_option("--ids", opts->ids, "token ids: 1,2,3 with ';' between sequences")->required();
  cmd->add_option("--out", opts->out, "output .npy file")->required();
  // fp32 unless asked: this is the command other implementations check numbers against.
  add_precision_option(cmd, opts->precision, "fp32");
  cmd->callback([opts] { run(*opts); });
}

}  // namespace memoe::cli
