// memoe niah --model DIR --haystack FILE... --out DIR: the needle-in-a-
// haystack suite (eval/niah.h) answered greedily through the KV cache, or
// with --dump-prompts only written out.
#include <cstdio>
#include <filesystem>
#include <string>

#include "cli/commands.h"
#include "cli/precision_option.h"
#include "core/error.h"
#include "eval/niah.h"
#include "io/text_corpus.h"
#include "io/tokenizer.h"
#include "model/checkpoint.h"

namespace memoe::cli {

namespace {

struct Options {
  std::string model, tokenizer, out, precision;
  std::vector<std::string> haystack, tasks = {"single", "multikey", "multivalue", "multiquery"};
  NiahOptions niah;
  bool dump_prompts = false;
  int64_t prefill_chunk = 512;
};

// The haystack files' documents, tokenized one after another (a blank line
// between them), until there is enough for the longest length many times.
std::vector<int32_t> haystack_ids(const Tokenizer& tok, const std::vector<std::string>& files, int64_t enough) {
  std::vector<int32_t> ids;
  for (const std::string& f : files) {
    check_text_input(f);
    for_each_document(f, [&](const std::string& text) {
      if (int64_t(ids.size()) >= enough) return;
      const std::vector<int32_t> doc = tok.encode(text + "\n\n");
      ids.insert(ids.end(), doc.begin(), doc.end());
    });
  }
  return ids;
}

void run(Options& o) {
  MEMOE_CHECK(!o.haystack.empty(), "niah: --haystack FILE... is required");
  MEMOE_CHECK(!o.out.empty(), "niah: --out DIR is required");
  MEMOE_CHECK(!o.model.empty() || (o.dump_prompts && !o.tokenizer.empty()),
              "niah: --model DIR is required (or --dump-prompts with --tokenizer DIR)");
  o.niah.tasks.clear();
  for (const std::string& t : o.tasks) o.niah.tasks.push_back(parse_retrieval_task(t));
  const std::string tok_dir = o.tokenizer.empty() ? resolve_model_dir(o.model) : o.tokenizer;
  MEMOE_CHECK(std::filesystem::exists(std::filesystem::path(tok_dir) / Tokenizer::kModelFile), "niah: no tokenizer in ",
              tok_dir, " (pass --tokenizer DIR)");
  const Tokenizer tok = Tokenizer::load(tok_dir);
  int64_t longest = 0;
  for (int64_t l : o.niah.lengths) longest = std::max(longest, l);
  NiahCodec codec;
  codec.encode = [&tok](const std::string& s) { return tok.encode(s); };
  codec.decode = [&tok](const std::vector<int32_t>& ids) { return tok.decode(ids); };
  codec.document_start = tok.eos_id();
  codec.starts_word = [&tok](int32_t id) { return tok.piece(id).rfind("\xE2\x96\x81", 0) == 0; };  // "▁"
  // The suite first: its checks need no model.
  const std::vector<NiahSample> samples = build_niah_suite(o.niah, codec, haystack_ids(tok, o.haystack, 8 * longest));
  if (o.dump_prompts) {
    write_niah_prompts(o.out, samples, codec);
    std::printf("wrote %zu prompts to %s/prompts.jsonl\n", samples.size(), o.out.c_str());
    return;
  }
  Model model = load_model(o.model, LoadOptions{WeightStorage::mapped});
  const int64_t context = model.config.max_position_embeddings;
  MEMOE_CHECK(longest <= context, "niah: length ", longest, " is over the model's context of ", context, " tokens");
  // An answer cut short by the end of the context would score as wrong.
  for (const NiahSample& s : samples)
    MEMOE_CHECK(s.length + s.max_answer_tokens <= context, "niah: length ", s.length, " leaves room for ",
                context - s.length, " answer tokens in the model's context of ", context, "; a ",
                retrieval_task_name(s.task), " answer needs ", s.max_answer_tokens);
  apply_precision(model, o.precision);
  std::vector<NiahAnswer> answers;
  double total = 0;
  for (size_t i = 0; i < samples.size(); ++i) {
    const NiahSample& s = samples[i];
    const std::vector<int32_t> answer =
        greedy_continuation(model, s.ids, s.max_answer_tokens, tok.eos_id(), tok.vocab_size(), o.prefill_chunk);
    NiahAnswer a;
    a.text = tok.decode(answer);
    a.score = niah_score(s, a.text);
    total += a.score;
    answers.push_back(a);
    std::fprintf(stderr, "\r%zu/%zu samples, mean score %.3f", i + 1, samples.size(), total / double(i + 1));
  }
  std::fprintf(stderr, "\n");
  write_niah_report(o.out, samples, answers, std::filesystem::path(resolve_model_dir(o.model)).filename().string());
  std::printf("niah: %zu samples, mean accuracy %.3f; %s/summary.csv, samples.jsonl, niah_*.png\n", samples.size(),
              total / double(samples.size()), o.out.c_str());
}

}  // namespace

void add_niah_command(CLI::App& app) {
  auto o = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("niah", "Needle-in-a-haystack retrieval (RULER's NIAH family) through the KV cache");
  cmd->add_option("--model", o->model, "model directory");
  cmd->add_option("--tokenizer", o->tokenizer, "tokenizer directory (default: the model's)");
  cmd->add_option("--haystack", o->haystack, "text files (.txt, .jsonl) the needles hide in")->expected(1, -1);
  cmd->add_option("--lengths", o->niah.lengths, "prompt lengths in tokens")->delimiter(',')->capture_default_str();
  cmd->add_option("--depths", o->niah.depths, "needle depths, percent of the context")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--tasks", o->tasks, "single, multikey, multivalue, multiquery")->delimiter(',')->capture_default_str();
  cmd->add_option("--samples", o->niah.samples, "samples per task, length and depth")->capture_default_str();
  cmd->add_option("--seed", o->niah.seed, "seed of the suite")->capture_default_str();
  cmd->add_option("--distractors", o->niah.counts.distractors, "multikey: distractor needles")->capture_default_str();
  cmd->add_option("--values", o->niah.counts.values, "multivalue: values of the key")->capture_default_str();
  cmd->add_option("--queries", o->niah.counts.queries, "multiquery: keys asked at once")->capture_default_str();
  cmd->add_option("--out", o->out, "output directory");
  cmd->add_flag("--dump-prompts", o->dump_prompts,
                "write every prompt (ids, text, needle positions, expected answers) without running a model");
  cmd->add_option("--prefill-chunk", o->prefill_chunk, "prompt tokens per prefill pass")->capture_default_str();
  add_precision_option(cmd, o->precision);
  cmd->callback([o] { run(*o); });
}

}  // namespace memoe::cli
