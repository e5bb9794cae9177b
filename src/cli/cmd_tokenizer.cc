// memoe tokenizer train|encode|decode: build the project's sentencepiece
// tokenizer (io/tokenizer.h) and use it from the shell.
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/id_list.h"
#include "core/error.h"
#include "io/tokenizer.h"

namespace memoe::cli {

namespace {
struct TrainOptions {
  std::vector<std::string> inputs;
  int vocab = 0;
  std::string out;
};

struct UseOptions {
  std::string tokenizer, text, ids;
};

// "1, 2,3" -> {1, 2, 3}; ranges are checked by Tokenizer::decode.
std::vector<int32_t> parse_id_list(const std::string& text) {
  const auto rows = parse_id_rows(text);
  MEMOE_CHECK(rows.size() == 1, "--ids: one sequence expected (no ';')");
  std::vector<int32_t> ids;
  for (int64_t v : rows[0]) {
    MEMOE_CHECK(v >= INT32_MIN && v <= INT32_MAX, "--ids: '", v, "' is not a token id");
    ids.push_back(int32_t(v));
  }
  return ids;
}

void run_train(const TrainOptions& o) {
  std::fprintf(stderr, "training a %d-piece tokenizer on %zu file(s)...\n", o.vocab, o.inputs.size());
  Tokenizer::train(o.inputs, o.vocab, o.out);
  std::printf("wrote %s/%s (%d pieces)\n", o.out.c_str(), Tokenizer::kModelFile, o.vocab);
}

void run_encode(const UseOptions& o) {
  const Tokenizer tok = Tokenizer::load(o.tokenizer);
  const std::vector<int32_t> ids = tok.encode(o.text);
  std::string line;
  for (size_t i = 0; i < ids.size(); ++i) line += (i ? "," : "") + std::to_string(ids[i]);
  std::printf("%s\n", line.c_str());
}

void run_decode(const UseOptions& o) {
  const Tokenizer tok = Tokenizer::load(o.tokenizer);
  const std::string text = tok.decode(parse_id_list(o.ids));
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::printf("\n");
}
}  // namespace

void add_tokenizer_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("tokenizer", "Train or use a sentencepiece BPE tokenizer");
  cmd->require_subcommand(1);

  auto train = std::make_shared<TrainOptions>();
  CLI::App* t = cmd->add_subcommand("train", "Train a byte-fallback BPE tokenizer on .txt / .jsonl files");
  t->add_option("--input", train->inputs, "training text: .txt, or .jsonl with {\"text\": ...} lines")->required();
  t->add_option("--vocab", train->vocab, "vocabulary size (more than 260)")->required();
  t->add_option("--out", train->out, "output directory (gets tokenizer.model, tokenizer.vocab)")->required();
  t->callback([train] { run_train(*train); });

  auto enc = std::make_shared<UseOptions>();
  CLI::App* e = cmd->add_subcommand("encode", "Print the token ids of a text, comma-separated");
  e->add_option("--tokenizer", enc->tokenizer, "tokenizer (or model) directory")->required();
  e->add_option("--text", enc->text, "UTF-8 text")->required();
  e->callback([enc] { run_encode(*enc); });

  auto dec = std::make_shared<UseOptions>();
  CLI::App* d = cmd->add_subcommand("decode", "Print the text of comma-separated token ids");
  d->add_option("--tokenizer", dec->tokenizer, "tokenizer (or model) directory")->required();
  d->add_option("--ids", dec->ids, "token ids, e.g. 1,2,3")->required();
  d->callback([dec] { run_decode(*dec); });
}

}  // namespace memoe::cli
