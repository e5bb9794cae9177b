// The researcher's path through the CLI on a small generated corpus:
// tokenizer train -> prepare -> train -> eval -> generate, plus encode /
// decode and init --tokenizer.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "io/config.h"
#include "io/tokenizer_corpus.h"

namespace memoe {
namespace {

namespace fs = std::filesystem;

class Pipeline : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("memoe_pipeline_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  // Exit status; stdout in *out.
  int memoe(const std::string& args, std::string* out = nullptr) {
    const std::string o = path("stdout");
    const int raw = std::system(("OMP_NUM_THREADS=1 " + std::string(MEMOE_CLI) + " " + args + " >" + o +
                                 " 2>" + path("stderr"))
                                    .c_str());
    if (out) {
      std::ifstream in(o);
      std::stringstream ss;
      ss << in.rdbuf();
      *out = ss.str();
    }
    return WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  }
  fs::path dir_;
};

TEST_F(Pipeline, TokenizerPrepareTrainEvalGenerate) {
  // Documents separated by blank lines.
  {
    std::ofstream txt(path("corpus.txt"));
    for (int doc = 0; doc < 40; ++doc) txt << io_testing::generated_corpus(3000, uint32_t(doc + 1)) << "\n\n";
  }
  std::string out;
  ASSERT_EQ(memoe("tokenizer train --input " + path("corpus.txt") + " --vocab 400 --out " + path("tok")), 0);
  ASSERT_EQ(memoe("tokenizer encode --tokenizer " + path("tok") + " --text 'hello world'", &out), 0);
  const std::string ids = out.substr(0, out.find('\n'));
  ASSERT_FALSE(ids.empty());
  ASSERT_EQ(memoe("tokenizer decode --tokenizer " + path("tok") + " --ids " + ids, &out), 0);
  EXPECT_NE(out.find("hello world"), std::string::npos) << out;

  ASSERT_EQ(memoe("prepare --input " + path("corpus.txt") + " --tokenizer " + path("tok") + " --out " +
                  path("data") + " --val-fraction 0.1"),
            0);
  // The tiny preset with a vocabulary that holds the tokenizer.
  ModelConfig cfg = load_config(std::string(MEMOE_SOURCE_DIR) + "/configs/tiny.json");
  cfg.vocab_size = 400;
  {
    std::ofstream c(path("config.json"));
    c << config_to_json(cfg);
  }
  ASSERT_EQ(memoe("init " + path("config.json") + " --tokenizer " + path("tok") + " --out " + path("init")), 0);
  EXPECT_TRUE(fs::exists(path("init/tokenizer.model")));

  ASSERT_EQ(memoe("train --config " + path("config.json") + " --data " + path("data") + " --tokenizer " +
                  path("tok") + " --out " + path("run") + " --steps 30 --batch 4 --seq 32 --lr 1e-2 --warmup 3" +
                  " --eval-every 15 --eval-windows 4 --checkpoint-every 15"),
            0);
  EXPECT_TRUE(fs::exists(path("run/loss.png")));
  const std::string model = path("run/checkpoints/step_00000030");
  EXPECT_TRUE(fs::exists(model + "/tokenizer.model"));
  ASSERT_EQ(memoe("eval --model " + model + " --data " + path("data") + " --seq 32", &out), 0);
  EXPECT_NE(out.find("perplexity"), std::string::npos) << out;
  EXPECT_NE(out.find("unigram baseline"), std::string::npos) << out;

  // A tokenizer larger than the model's vocabulary is refused, naming both sizes.
  const std::string tiny = std::string(MEMOE_SOURCE_DIR) + "/configs/tiny.json";
  EXPECT_NE(memoe("train --config " + tiny + " --data " + path("data") + " --tokenizer " + path("tok") + " --out " +
                  path("bad")),
            0);
  EXPECT_NE(memoe("init " + tiny + " --tokenizer " + path("tok") + " --out " + path("bad2")), 0);
  {
    std::ifstream in(path("stderr"));
    std::stringstream ss;
    ss << in.rdbuf();
    EXPECT_NE(ss.str().find("400"), std::string::npos) << ss.str();
    EXPECT_NE(ss.str().find("64"), std::string::npos) << ss.str();
  }

  std::string a, b;
  ASSERT_EQ(memoe("generate --model " + model + " --prompt 'the model' --max-tokens 12 --greedy", &a), 0);
  ASSERT_EQ(memoe("generate --model " + model + " --prompt 'the model' --max-tokens 12 --greedy", &b), 0);
  EXPECT_EQ(a, b);
  EXPECT_GT(a.size(), 1u);
  ASSERT_EQ(memoe("generate --model " + model + " --prompt 'the model' --max-tokens 12 --seed 4 --top-k 5", &a), 0);
  EXPECT_NE(memoe("generate --model " + model + " --prompt x --temperature 0"), 0);
}

}  // namespace
}  // namespace memoe
