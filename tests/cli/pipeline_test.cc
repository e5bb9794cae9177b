// The researcher's path through the CLI on a small generated corpus:
// tokenizer train -> prepare -> train -> eval -> generate, plus encode /
// decode and init --tokenizer.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "cli_runner.h"
#include "io/config.h"
#include "io/tokenizer_corpus.h"

namespace memoe {
namespace {

namespace fs = std::filesystem;

class Pipeline : public testing::CliTest {
 protected:
  // Exit status; stdout in *out.
  int run(const std::string& args, std::string* out = nullptr) {
    const testing::CliResult r = memoe(args);
    if (out) *out = r.out;
    return r.status;
  }
  // A 400-piece tokenizer trained on 20 generated documents (path("tok")),
  // and the tiny preset with that vocabulary written to path("config.json").
  ModelConfig tokenizer_and_tiny_config(int64_t context = 0) {
    {
      std::ofstream txt(path("corpus.txt"));
      for (int doc = 0; doc < 20; ++doc) txt << io_testing::generated_corpus(3000, uint32_t(doc + 1)) << "\n\n";
    }
    EXPECT_EQ(run("tokenizer train --input " + path("corpus.txt") + " --vocab 400 --out " + path("tok")), 0);
    ModelConfig cfg = load_config(std::string(MEMOE_SOURCE_DIR) + "/configs/tiny.json");
    cfg.vocab_size = 400;
    if (context > 0) cfg.max_position_embeddings = context;
    std::ofstream c(path("config.json"));
    c << config_to_json(cfg);
    return cfg;
  }
};

TEST_F(Pipeline, TokenizerPrepareTrainEvalGenerate) {
  // Documents separated by blank lines.
  {
    std::ofstream txt(path("corpus.txt"));
    for (int doc = 0; doc < 40; ++doc) txt << io_testing::generated_corpus(3000, uint32_t(doc + 1)) << "\n\n";
  }
  std::string out;
  ASSERT_EQ(run("tokenizer train --input " + path("corpus.txt") + " --vocab 400 --out " + path("tok")), 0);
  ASSERT_EQ(run("tokenizer encode --tokenizer " + path("tok") + " --text 'hello world'", &out), 0);
  const std::string ids = out.substr(0, out.find('\n'));
  ASSERT_FALSE(ids.empty());
  ASSERT_EQ(run("tokenizer decode --tokenizer " + path("tok") + " --ids " + ids, &out), 0);
  EXPECT_NE(out.find("hello world"), std::string::npos) << out;

  ASSERT_EQ(run("prepare --input " + path("corpus.txt") + " --tokenizer " + path("tok") + " --out " +
                  path("data") + " --val-fraction 0.1"),
            0);
  // The tiny preset with a vocabulary that holds the tokenizer.
  ModelConfig cfg = load_config(std::string(MEMOE_SOURCE_DIR) + "/configs/tiny.json");
  cfg.vocab_size = 400;
  {
    std::ofstream c(path("config.json"));
    c << config_to_json(cfg);
  }
  ASSERT_EQ(run("init " + path("config.json") + " --tokenizer " + path("tok") + " --out " + path("init")), 0);
  EXPECT_TRUE(fs::exists(path("init/tokenizer.model")));

  ASSERT_EQ(run("train --config " + path("config.json") + " --data " + path("data") + " --tokenizer " +
                  path("tok") + " --out " + path("run") + " --steps 30 --batch 4 --seq 32 --lr 1e-2 --warmup 3" +
                  " --eval-every 15 --eval-windows 4 --checkpoint-every 15"),
            0);
  EXPECT_TRUE(fs::exists(path("run/loss.png")));
  // The run's newest checkpoint, through the checkpoints/latest link.
  const std::string model = path("run/checkpoints/latest");
  EXPECT_EQ(fs::read_symlink(model), "step_00000030");
  EXPECT_TRUE(fs::exists(model + "/tokenizer.model"));
  ASSERT_EQ(run("eval --model " + model + " --data " + path("data") + " --seq 32", &out), 0);
  // "val split: N tokens, loss L nats/token, perplexity P" then "unigram baseline: loss L, perplexity P".
  double model_ppl = 0, unigram_ppl = 0;
  long long tokens = 0;
  ASSERT_EQ(std::sscanf(out.c_str(), "val split: %lld tokens, loss %*f nats/token, perplexity %lf", &tokens, &model_ppl),
            2)
      << out;
  const size_t u = out.find("unigram baseline: ");
  ASSERT_NE(u, std::string::npos) << out;
  ASSERT_EQ(std::sscanf(out.c_str() + u, "unigram baseline: loss %*f, perplexity %lf", &unigram_ppl), 1) << out;
  EXPECT_GT(tokens, 1000);
  EXPECT_GT(model_ppl, 1.0);
  EXPECT_LT(model_ppl, unigram_ppl) << out;

  // A tokenizer larger than the model's vocabulary is refused, naming both sizes.
  const std::string tiny = std::string(MEMOE_SOURCE_DIR) + "/configs/tiny.json";
  EXPECT_NE(run("train --config " + tiny + " --data " + path("data") + " --tokenizer " + path("tok") + " --out " +
                  path("bad")),
            0);
  EXPECT_NE(run("init " + tiny + " --tokenizer " + path("tok") + " --out " + path("bad2")), 0);
  const std::string err = io_testing::read_bytes(path("stderr"));
  EXPECT_NE(err.find("400"), std::string::npos) << err;
  EXPECT_NE(err.find("64"), std::string::npos) << err;

  std::string a, b;
  ASSERT_EQ(run("generate --model " + model + " --prompt 'the model' --max-tokens 12 --greedy", &a), 0);
  // The precision line, then "generated N tokens (finish: length|stop) in S s" on stderr.
  const std::string gen_err = io_testing::read_bytes(path("stderr"));
  ASSERT_EQ(gen_err.rfind("precision: ", 0), 0u) << gen_err;
  const size_t second_line = gen_err.find('\n') + 1;
  int generated = -1;
  char finish[16] = {};
  ASSERT_EQ(std::sscanf(gen_err.c_str() + second_line, "generated %d tokens (finish: %15[a-z])", &generated, finish), 2)
      << gen_err;
  EXPECT_TRUE((generated == 12 && std::string(finish) == "length") ||
              (generated < 12 && std::string(finish) == "stop"))
      << gen_err;
  EXPECT_GT(generated, 0);
  ASSERT_EQ(run("generate --model " + model + " --prompt 'the model' --max-tokens 12 --greedy", &b), 0);
  EXPECT_EQ(a, b);
  EXPECT_GT(a.size(), 1u);
  ASSERT_EQ(run("generate --model " + model + " --prompt 'the model' --max-tokens 12 --seed 4 --top-k 5", &a), 0);
  EXPECT_NE(run("generate --model " + model + " --prompt x --temperature 0"), 0);

  // --ids and --json: the same greedy tokens as the text prompt's ids give.
  std::string json_out;
  ASSERT_EQ(run("generate --model " + model + " --prompt 'the model' --max-tokens 12 --greedy --json", &json_out), 0);
  const auto j = nlohmann::json::parse(json_out);
  std::string id_list;
  for (int64_t id : j.at("prompt_ids").get<std::vector<int64_t>>())
    id_list += (id_list.empty() ? "" : ",") + std::to_string(id);
  ASSERT_EQ(run("generate --model " + model + " --ids " + id_list + " --max-tokens 12 --greedy --json", &b), 0);
  const auto k = nlohmann::json::parse(b);
  EXPECT_EQ(k.at("ids"), j.at("ids"));
  EXPECT_EQ(k.at("text"), j.at("text"));
  EXPECT_GT(k.at("kv_cache_bytes").get<int64_t>(), 0);
  EXPECT_GT(k.at("decode_tokens_per_s").get<double>(), 0.0);
  // Where the Engram tables live and how their rows are read ahead changes
  // no token.
  for (const char* tables : {" --engram-tables resident", " --engram-tables mmap --prefetch off",
                             " --engram-tables mmap --prefetch reader"}) {
    std::string out;
    ASSERT_EQ(run("generate --model " + model + " --ids " + id_list + " --max-tokens 12 --greedy --json" + tables, &out),
              0)
        << tables;
    EXPECT_EQ(nlohmann::json::parse(out).at("ids"), j.at("ids")) << tables;
  }
  // Bad requests: one line each, before any other output.
  for (const char* bad : {" --max-tokens 3", " --ids 3,99999", " --prompt x --ids 3",
                          " --prompt 'the model' --max-context 2", " --ids '1;2'",
                          " --ids 3 --engram-tables disk", " --ids 3 --prefetch always"}) {
    const testing::CliResult r = memoe("generate --model " + model + bad);
    EXPECT_NE(r.status, 0) << bad;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << bad << ": " << r.err;
    EXPECT_EQ(r.out, "") << bad;
  }
}

TEST_F(Pipeline, NiahAnswersThroughTheCacheWritesItsReportAndRefusesBadSuites) {
  tokenizer_and_tiny_config(1024);
  ASSERT_EQ(run("init " + path("config.json") + " --tokenizer " + path("tok") + " --out " + path("m")), 0);
  const std::string suite = " --haystack " + path("corpus.txt") + " --lengths 500,700 --depths 0,100 --samples 1";
  const testing::CliResult r = memoe("niah --model " + path("m") + suite + " --out " + path("niah"));
  ASSERT_EQ(r.status, 0) << r.err;
  for (const char* f : {"samples.jsonl", "summary.csv", "summary.json", "niah_single.png", "niah_multikey.png",
                        "niah_multivalue.png", "niah_multiquery.png"})
    EXPECT_TRUE(fs::exists(path("niah/") + f)) << f;
  std::ifstream samples(path("niah/samples.jsonl"));
  int lines = 0;
  for (std::string line; std::getline(samples, line);) ++lines;
  EXPECT_EQ(lines, 4 * 2 * 2);
  // The prompts alone need only the tokenizer, and are the suite the run used.
  const testing::CliResult dump =
      memoe("niah --tokenizer " + path("tok") + suite + " --dump-prompts --out " + path("dump"));
  ASSERT_EQ(dump.status, 0) << dump.err;
  std::ifstream prompts(path("dump/prompts.jsonl"));
  std::string first;
  std::getline(prompts, first);
  EXPECT_EQ(nlohmann::json::parse(first).at("ids").size(), 500u);
  // Bad suites: one line each, non-zero.
  {
    std::ofstream small(path("small.txt"));
    small << "too little text\n";
  }
  for (const auto& [args, message] : std::vector<std::pair<std::string, std::string>>{
           {" --haystack " + path("corpus.txt") + " --lengths 2048", "over the model's context of 1024 tokens"},
           {suite + " --tasks single,bogus", "unknown retrieval task 'bogus'"},
           {" --haystack " + path("small.txt") + " --lengths 500", "fewer than the longest length 500"},
           {suite + " --depths 0,150", "depth 150 is outside 0..100"},
           {" --haystack " + path("corpus.txt") + " --lengths 1020", "leaves room for 4 answer tokens"}}) {
    const testing::CliResult bad = memoe("niah --model " + path("m") + args + " --out " + path("bad"));
    EXPECT_NE(bad.status, 0) << args;
    EXPECT_NE(bad.err.find(message), std::string::npos) << args << ": " << bad.err;
    EXPECT_EQ(std::count(bad.err.begin(), bad.err.end(), '\n'), 1) << bad.err;
  }
}

// Labelled text: the loss per domain (memoe eval --labelled) and the
// routing analysis across two models (memoe analyze routing).
TEST_F(Pipeline, PerDomainLossAndRoutingAnalysisOfLabelledText) {
  tokenizer_and_tiny_config();
  for (const char* seed : {"1", "2"})
    ASSERT_EQ(run("init " + path("config.json") + " --tokenizer " + path("tok") + " --seed " + seed + " --out " +
                  path(std::string("m") + seed)),
              0);
  // Three domains of generated text; "zeta" has one short document.
  {
    std::ofstream j(path("labelled.jsonl"));
    for (int doc = 0; doc < 6; ++doc)
      j << nlohmann::json{{"text", io_testing::generated_corpus(2000, uint32_t(100 + doc))},
                          {"topic", doc % 2 ? "beta" : "alpha"}}
                  .dump()
        << "\n";
    j << nlohmann::json{{"text", "a short one"}, {"topic", "zeta"}}.dump() << "\n";
  }
  const std::string data = " --labelled " + path("labelled.jsonl") + " --labels topic";
  std::string out;
  ASSERT_EQ(run("eval --model " + path("m1") + data + " --tokens-per-domain 300 --seq 64", &out), 0);
  // "domain NAME: N tokens, loss L nats/token, perplexity P", sorted by name.
  std::istringstream lines(out);
  for (const char* domain : {"alpha", "beta", "zeta"}) {
    std::string line;
    ASSERT_TRUE(std::getline(lines, line)) << out;
    char name[16];
    long long tokens = 0;
    double loss = 0;
    ASSERT_EQ(std::sscanf(line.c_str(), "domain %15[^:]: %lld tokens, loss %lf", name, &tokens, &loss), 3) << line;
    EXPECT_EQ(std::string(name), domain);
    // Cut at 300 tokens (299 targets in windows of 64), but for the short one.
    if (std::string(domain) != "zeta") {
      EXPECT_EQ(tokens, 300 - 5) << line;  // 5 windows, each one fewer targets
    }
    EXPECT_NEAR(loss, std::log(400.0), 0.5) << line;  // an untrained model: about uniform
  }

  // Only the documents memoe prepare held out: as many as its val split has.
  ASSERT_EQ(run("prepare --input " + path("labelled.jsonl") + " --tokenizer " + path("tok") + " --out " +
                    path("data") + " --val-fraction 0.5 --seed 3"),
            0);
  std::ifstream meta_in(path("data/meta.json"));
  const int64_t val_documents = nlohmann::json::parse(meta_in).at("splits").at("val").at("documents");
  ASSERT_GT(val_documents, 0);
  ASSERT_LT(val_documents, 7);
  ASSERT_EQ(run("eval --model " + path("m1") + data + " --held-out-of " + path("data"), &out), 0);
  int64_t kept = 0;
  for (size_t at = out.find("tokens, loss"); at != std::string::npos; at = out.find("tokens, loss", at + 1)) {
    long long documents = 0;
    ASSERT_EQ(std::sscanf(out.c_str() + out.find(", perplexity", at), ", perplexity %*f, %lld documents", &documents), 1)
        << out;
    kept += documents;
  }
  EXPECT_EQ(kept, val_documents) << out;

  ASSERT_EQ(run("analyze routing --model " + path("m1") + " " + path("m2") + " --data " + path("labelled.jsonl") +
                    " --labels topic --tokens-per-domain 500 --seq 100 --out " + path("routing"),
                &out),
            0);
  for (const char* f : {"routing.json", "specialisation.png", "usage_layer1.png", "usage_layer2.png"})
    EXPECT_TRUE(fs::exists(path("routing/") + f)) << f;
  std::ifstream in(path("routing/routing.json"));
  const nlohmann::json j = nlohmann::json::parse(in);
  EXPECT_EQ(j.at("domains"), (std::vector<std::string>{"alpha", "beta", "zeta"}));
  EXPECT_EQ(j.at("tokens").at(0), 500);
  ASSERT_EQ(j.at("models").size(), 2u);
  for (const auto& model : j.at("models")) {
    ASSERT_EQ(model.at("layers").size(), 2u);  // MoE layers 1 and 2
    for (const auto& layer : model.at("layers"))
      for (const auto& row : layer.at("usage")) {
        double sum = 0;
        for (double f : row) sum += f;
        EXPECT_NEAR(sum, 1.0, 1e-9);
      }
  }
  ASSERT_EQ(j.at("consistency").size(), 1u);
  EXPECT_EQ(j.at("consistency").at(0).at("layers").at(0).at("match").size(), 8u);
  EXPECT_NE(out.find("model 1 vs 0, layer 2: matched profile correlation"), std::string::npos) << out;

  // Bad input: one line each, non-zero.
  {
    std::ofstream j2(path("unlabelled.jsonl"));
    j2 << nlohmann::json{{"text", "no label here"}}.dump() << "\n";
  }
  for (const auto& [args, message] : std::vector<std::pair<std::string, std::string>>{
           {"eval --model " + path("m1") + " --labelled " + path("unlabelled.jsonl"), "genre"},
           {"eval --model " + path("m1") + " --labelled " + path("corpus.txt"), "JSONL"},
           {"eval --model " + path("m1"), "--data DIR or --labelled FILE"},
           {"eval --model " + path("m1") + " --held-out-of " + path("data"), "--held-out-of filters --labelled"},
           {"eval --model " + path("m1") + " --labelled " + path("unlabelled.jsonl") + " --labels text --held-out-of " +
                path("data"),
            "none of the labelled documents is in the held-out split"},
           {"analyze routing --model " + path("m1") + " --data " + path("labelled.jsonl") + " --out " + path("r2"),
            "genre"},
           {"analyze routing --model " + path("m1") + " --data" + data.substr(11) + " --seq 0 --out " + path("r2"), "--seq"}}) {
    const testing::CliResult bad = memoe(args);
    EXPECT_NE(bad.status, 0) << args;
    EXPECT_NE(bad.err.find(message), std::string::npos) << args << ": " << bad.err;
    EXPECT_EQ(std::count(bad.err.begin(), bad.err.end(), '\n'), 1) << args << ": " << bad.err;
  }
}

}  // namespace
}  // namespace memoe
