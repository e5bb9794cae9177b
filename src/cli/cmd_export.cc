// memoe export gguf --model DIR --out FILE.gguf [--dtype f32|f16|bf16|q8_0]:
// the model as llama.cpp's deepseek2 (model/gguf_export.h).
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "cli/commands.h"
#include "core/error.h"
#include "io/gguf.h"
#include "io/tokenizer.h"
#include "model/checkpoint.h"
#include "model/gguf_export.h"

namespace memoe::cli {

namespace {

struct Options {
  std::string model, out, dtype = "f32";
};

void run_gguf(const Options& o) {
  const GgufTensorType dtype = parse_gguf_tensor_type(o.dtype);
  const std::string dir = resolve_model_dir(o.model);
  // The config decides first: a model llama.cpp cannot run is refused before its weights are read.
  const std::string problem = gguf_export_problem(load_config(dir + "/config.json"));
  MEMOE_CHECK(problem.empty(), "cannot export ", o.model, " to GGUF: ", problem);
  MEMOE_CHECK(std::filesystem::exists(dir + "/" + Tokenizer::kModelFile), "cannot export ", o.model,
              " to GGUF: it has no ", Tokenizer::kModelFile, " (GGUF carries the tokenizer; train with --tokenizer)");
  const Tokenizer tok = Tokenizer::load(dir);
  const Model m = load_model(dir);
  const GgufExportSummary s = export_gguf(m, tok, o.out, dtype);
  std::printf("wrote %s: llama.cpp deepseek2, %d tensors, %.2f MB of weights in %s", o.out.c_str(), s.tensors,
              double(s.bytes) / 1e6, gguf_tensor_type_name(dtype));
  if (s.kept_f32 > 0) std::printf(" (%d matrices in f32: rows not whole q8_0 blocks of 32)", s.kept_f32);
  std::printf(", tokenizer of %d pieces\n", tok.vocab_size());
}

}  // namespace

void add_export_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("export", "Export a model to another runtime's format");
  cmd->require_subcommand(1);
  auto o = std::make_shared<Options>();
  CLI::App* gguf = cmd->add_subcommand("gguf", "GGUF v3 for llama.cpp (architecture deepseek2; models without Engram)");
  gguf->add_option("--model", o->model, "model directory (a checkpoint, or RUN/checkpoints/latest)")->required();
  gguf->add_option("--out", o->out, "output .gguf file")->required();
  gguf->add_option("--dtype", o->dtype, "matrices in f32, f16, bf16 or q8_0 (norms, router and biases stay f32)")
      ->capture_default_str();
  gguf->callback([o] { run_gguf(*o); });
}

}  // namespace memoe::cli
