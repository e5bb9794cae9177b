// memoe init CONFIG --out DIR --seed S [--tokenizer TOK]: a freshly
// initialised model directory. With a tokenizer, the Engram token map is
// built from it (spec §5.1) and DIR gets a copy of tokenizer.model, so the
// model directory is self-contained.
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "core/error.h"
#include "io/token_map.h"
#include "io/tokenizer.h"
#include "model/checkpoint.h"
#include "model/init.h"
#include "model/param_count.h"

namespace memoe::cli {

namespace {
struct Options {
  std::string config, out, dtype = "f32", tokenizer;
  uint64_t seed = 0;
};

void run(const Options& o) {
  const ModelConfig cfg = load_config(o.config);
  MEMOE_CHECK(o.dtype == "f32" || o.dtype == "bf16", "--dtype must be f32 or bf16");
  const ParamCount pc = count_params(cfg, 1);
  MEMOE_CHECK(double(pc.total) * 4.0 < 64.0 * (1ull << 30), "config ", o.config, " has ", pc.total,
              " parameters: too large to initialise in memory here (limit 64 GiB of fp32)");
  std::vector<int64_t> token_map;  // empty = identity
  std::optional<Tokenizer> tok;
  if (!o.tokenizer.empty()) {
    tok.emplace(Tokenizer::load(o.tokenizer));
    MEMOE_CHECK(tok->vocab_size() <= cfg.vocab_size, "tokenizer ", o.tokenizer, " has ", tok->vocab_size(),
                " tokens but config ", o.config, " has vocab_size ", cfg.vocab_size);
    token_map = compressed_token_map(*tok, cfg.vocab_size);
  }
  Model m = init_model(cfg, o.seed, std::move(token_map));
  save_model(m, o.out, o.dtype == "bf16" ? DType::BF16 : DType::F32);
  if (tok) tok->save(o.out);
  // V4's MTP blocks are counted by memoe params but not built yet.
  std::printf("wrote %s (%lld parameters, seed %llu)\n", o.out.c_str(), (long long)(pc.total - pc.mtp),
              (unsigned long long)o.seed);
}
}  // namespace

void add_init_command(CLI::App& app) {
  auto opts = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("init", "Write a freshly initialised model directory");
  cmd->add_option("config", opts->config, "config.json")->required();
  cmd->add_option("--out", opts->out, "output model directory")->required();
  cmd->add_option("--seed", opts->seed, "random seed");
  cmd->add_option("--dtype", opts->dtype, "stored weight type: f32 or bf16");
  cmd->add_option("--tokenizer", opts->tokenizer,
                  "tokenizer directory: builds the Engram token map and copies tokenizer.model into --out");
  cmd->callback([opts] { run(*opts); });
}

}  // namespace memoe::cli
