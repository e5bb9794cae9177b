// memoe logits --model DIR --ids 1,2,3[;4,5,6] --out FILE.npy: final logits
// [B, L, V] as float32, the interface other implementations compare against.
// --decode P computes them through the KV cache instead: the first P tokens
// of each sequence in one prefill, then the rest one token at a time.
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/id_list.h"
#include "cli/precision_option.h"
#include "core/error.h"
#include "io/npy.h"
#include "model/checkpoint.h"
#include "model/inference.h"

namespace memoe::cli {

namespace {
struct Options {
  std::string model, ids, out, precision;
  int64_t decode = -1;  // prefill length; -1: one full forward pass
};

void run(const Options& o) {
  const auto rows = parse_id_rows(o.ids);
  Model m = load_model(o.model);
  const int64_t B = int64_t(rows.size()), L = int64_t(rows[0].size()), V = m.config.vocab_size;
  std::vector<int64_t> ids;
  for (const auto& r : rows) ids.insert(ids.end(), r.begin(), r.end());
  check_token_ids(m.config, ids.data(), int64_t(ids.size()));
  apply_precision(m, o.precision, /*announce=*/false);  // stdout and stderr stay as they were
  if (o.decode < 0) {
    ModelState state;
    model_forward(m, ids.data(), B, L, state);
    write_npy_f32(o.out, {B, L, V}, state.logits.data());
    return;
  }
  MEMOE_CHECK(o.decode <= L, "--decode ", o.decode, " is longer than the sequences (", L, " tokens)");
  Tensor all({B, L, V}), part;
  for (int64_t b = 0; b < B; ++b) {
    SequenceState seq = new_sequence(m);
    const int64_t* row = ids.data() + b * L;
    float* dst = all.data() + b * L * V;
    if (o.decode > 0) {
      feed_tokens(m, seq, row, o.decode, o.decode, Logits::All, part);
      std::copy(part.data(), part.data() + o.decode * V, dst);
    }
    for (int64_t t = o.decode; t < L; ++t) {
      feed_tokens(m, seq, row + t, 1, 1, Logits::Last, part);
      std::copy(part.data(), part.data() + V, dst + t * V);
    }
  }
  write_npy_f32(o.out, {B, L, V}, all.data());
}
}  // namespace

void add_logits_command(CLI::App& app) {
  auto opts = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("logits", "Write the final logits [B, L, V] of token ids as float32 .npy");
  cmd->add_option("--model", opts->model, "model directory")->required();
  cmd->add_option("--ids", opts->ids, "token ids: 1,2,3 with ';' between sequences")->required();
  cmd->add_option("--out", opts->out, "output .npy file")->required();
  cmd->add_option("--decode", opts->decode,
                  "through the KV cache: prefill the first P tokens, then decode the rest one at a time")
      ->check(CLI::NonNegativeNumber);
  // fp32 unless asked: this is the command other implementations check numbers against.
  add_precision_option(cmd, opts->precision, "fp32");
  cmd->callback([opts] { run(*opts); });
}

}  // namespace memoe::cli
