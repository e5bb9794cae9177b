// memoe prepare --input FILE... --tokenizer DIR --out DIR: tokenize text
// corpora (.txt, .jsonl) into a token data directory for training.
#include <cstdio>
#include <memory>
#include <string>

#include "cli/commands.h"
#include "train/prepare.h"

namespace memoe::cli {

namespace {
void run(const PrepareOptions& o) {
  const TokenDataMeta meta = prepare_data(o);
  std::printf("wrote %s:", o.out_dir.c_str());
  const char* sep = "";
  for (const auto& [name, split] : meta.splits) {
    std::printf("%s %s %lld tokens in %lld documents (%zu shard%s)", sep, name.c_str(), (long long)split.tokens,
                (long long)split.documents, split.shards.size(), split.shards.size() == 1 ? "" : "s");
    sep = ",";
  }
  std::printf("\n");
}
}  // namespace

void add_prepare_command(CLI::App& app) {
  auto opts = std::make_shared<PrepareOptions>();
  CLI::App* cmd = app.add_subcommand("prepare", "Tokenize text (.txt, .jsonl) into train/val token shards");
  cmd->add_option("--input", opts->inputs, "input files: .txt (documents separated by blank lines) or .jsonl")
      ->required();
  cmd->add_option("--tokenizer", opts->tokenizer_dir, "tokenizer directory")->required();
  cmd->add_option("--out", opts->out_dir, "output data directory (must not exist)")->required();
  cmd->add_option("--val-fraction", opts->val_fraction, "probability that a document goes to val")
      ->capture_default_str();
  cmd->add_option("--seed", opts->seed, "seed of the train/val assignment")->capture_default_str();
  cmd->add_option("--shard-tokens", opts->max_shard_tokens, "tokens per shard file")->capture_default_str();
  cmd->add_option("--retrieval-mix", opts->retrieval_mix,
                  "fraction of the train tokens given to synthetic needle-in-a-haystack documents (training keys and "
                  "values only, disjoint from memoe niah's)")
      ->capture_default_str();
  cmd->add_option("--retrieval-length", opts->retrieval_length, "tokens per retrieval document at most")
      ->capture_default_str();
  cmd->callback([opts] { run(*opts); });
}

}  // namespace memoe::cli
