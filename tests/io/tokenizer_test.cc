// Tokenizer: training (layout, reproducibility, atomic output, input
// checks), encode/decode round trips, decode_one per spec §5.1, loading.
#include "io/tokenizer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "test_files.h"
#include "tokenizer_corpus.h"

namespace memoe {
namespace {

namespace fs = std::filesystem;
using io_testing::generated_corpus;
using io_testing::read_bytes;
using io_testing::write_bytes;

constexpr int kVocab = 800;

// Runs `body`, expects a memoe::Error whose one-line message contains every
// needle.
template <typename Body>
void expect_error(Body body, const std::vector<std::string>& needles) {
  try {
    body();
    ADD_FAILURE() << "no error; wanted one containing " << needles[0];
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    for (const auto& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "'" << n << "' not in: " << msg;
  }
}

// One tokenizer trained for the whole suite (training takes a moment).
class TokenizerTest : public io_testing::TempDirTest {
 protected:
  static void SetUpTestSuite() {
    shared_dir_ = fs::temp_directory_path() / ("memoe_" + std::to_string(::getpid()) + "_TokenizerShared");
    fs::remove_all(shared_dir_);
    fs::create_directories(shared_dir_);
    write_bytes((shared_dir_ / "corpus.txt").string(), generated_corpus(150000));
    Tokenizer::train({(shared_dir_ / "corpus.txt").string()}, kVocab, (shared_dir_ / "tok").string());
    tok_ = std::make_unique<Tokenizer>(Tokenizer::load((shared_dir_ / "tok").string()));
  }
  static void TearDownTestSuite() {
    tok_.reset();
    fs::remove_all(shared_dir_);
  }
  static const Tokenizer& tok() { return *tok_; }
  static std::string shared(const std::string& name) { return (shared_dir_ / name).string(); }

  // Names in dir_ other than those given (temporary leftovers).
  std::vector<std::string> entries_except(const std::vector<std::string>& keep) const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir_)) {
      const std::string name = e.path().filename().string();
      if (std::find(keep.begin(), keep.end(), name) == keep.end()) out.push_back(name);
    }
    return out;
  }

  static inline fs::path shared_dir_;
  static inline std::unique_ptr<Tokenizer> tok_;
};

int id_of_piece(const Tokenizer& tok, const std::string& piece) {
  for (int id = 0; id < tok.vocab_size(); ++id)
    if (tok.piece(id) == piece) return id;
  return -1;
}

TEST_F(TokenizerTest, HasTheFixedLayout) {
  EXPECT_EQ(tok().vocab_size(), kVocab);
  EXPECT_EQ(tok().pad_id(), 0);
  EXPECT_EQ(tok().eos_id(), 3);
  EXPECT_EQ(tok().piece(0), "<pad>");
  EXPECT_EQ(tok().piece(1), "<unk>");
  EXPECT_EQ(tok().piece(2), "<s>");
  EXPECT_EQ(tok().piece(3), "</s>");
  EXPECT_EQ(tok().piece(4), "<0x00>");
  EXPECT_EQ(tok().piece(4 + 0x41), "<0x41>");
  EXPECT_EQ(tok().piece(259), "<0xFF>");
  EXPECT_TRUE(fs::is_regular_file(shared("tok/tokenizer.model")));
  EXPECT_TRUE(fs::is_regular_file(shared("tok/tokenizer.vocab")));
}

TEST_F(TokenizerTest, RoundTripsTextExactly) {
  const std::vector<std::string> texts = {
      "",
      "hello world",
      " hello  world ",
      "The model\n\nwrote\tthis:\r\n  indented line\n",
      "HELLO Caf\xC3\xA9 \xCE\x9F\xCE\x94\xCE\x9F\xCE\xA3 12345",
      "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E and \xF0\x9F\x99\x82 unseen",  // 日本語, 🙂
      std::string("nul\0inside", 10),
  };
  for (const auto& text : texts) {
    const auto ids = tok().encode(text);
    EXPECT_EQ(tok().decode(ids), text) << "text: " << text;
    EXPECT_EQ(std::count(ids.begin(), ids.end(), Tokenizer::kUnkId), 0) << "byte fallback, never <unk>: " << text;
  }
  // Encoding piecewise decodes to the concatenation (no dummy spaces).
  auto a = tok().encode("hello"), b = tok().encode(" world\nthe end");
  a.insert(a.end(), b.begin(), b.end());
  EXPECT_EQ(tok().decode(a), "hello world\nthe end");
}

TEST_F(TokenizerTest, LearnsMergesFromTheCorpus) {
  const std::string text = "the model and the memory of the engine";
  const auto ids = tok().encode(text);
  EXPECT_LT(ids.size(), text.size() / 3) << "BPE merges should cover frequent words";
  EXPECT_GE(id_of_piece(tok(), "\xE2\x96\x81the"), 0) << "'\xE2\x96\x81the' should be a piece";
  // Unseen characters are spelled as bytes: 日 is three byte pieces.
  const auto cjk = tok().encode("\xE6\x97\xA5");
  EXPECT_EQ(cjk, (std::vector<int32_t>{4 + 0xE6, 4 + 0x97, 4 + 0xA5}));
  EXPECT_EQ(tok().encode("\n"), (std::vector<int32_t>{4 + 0x0A}));
}

TEST_F(TokenizerTest, DecodeOneFollowsTheSpec) {
  EXPECT_EQ(tok().decode_one(4 + 0x41), "A");
  EXPECT_EQ(tok().decode_one(4 + 0x0A), "\n");
  EXPECT_EQ(tok().decode_one(4 + 0x00), std::string(1, '\0'));
  EXPECT_EQ(tok().decode_one(4 + 0xC3), "\xEF\xBF\xBD") << "a lone lead byte is incomplete UTF-8";
  EXPECT_EQ(tok().decode_one(4 + 0x80), "\xEF\xBF\xBD");
  const int the = id_of_piece(tok(), "\xE2\x96\x81the");
  ASSERT_GE(the, 0);
  EXPECT_EQ(tok().decode_one(the), " the") << "'\xE2\x96\x81' reads as a space";
  const int two_spaces = id_of_piece(tok(), "\xE2\x96\x81\xE2\x96\x81");
  ASSERT_GE(two_spaces, 0) << "double spaces in the corpus should give a whitespace-only piece";
  EXPECT_EQ(tok().decode_one(two_spaces), "  ");
  EXPECT_EQ(tok().decode_one(0), "<pad>");
  EXPECT_EQ(tok().decode_one(1), "<unk>");
  EXPECT_EQ(tok().decode_one(3), "</s>");
  // Plain decode drops control pieces instead.
  EXPECT_EQ(tok().decode({3, the, 0}), " the");
}

TEST_F(TokenizerTest, RejectsBadIdsAndText) {
  expect_error([] { tok().decode({5, kVocab}); }, {"token id 800", "[0, 800)"});
  expect_error([] { tok().decode({-1}); }, {"token id -1"});
  expect_error([] { tok().decode_one(kVocab); }, {"token id 800"});
  expect_error([] { tok().piece(-3); }, {"token id -3"});
  expect_error([] { tok().encode("ok \xC3\x28"); }, {"not valid UTF-8", "byte offset 3"});
}

TEST_F(TokenizerTest, SavesAndLoads) {
  tok().save(dir_.string());
  const Tokenizer copy = Tokenizer::load(dir_.string());
  EXPECT_EQ(copy.vocab_size(), kVocab);
  EXPECT_TRUE(read_bytes(file("tokenizer.model")) == read_bytes(shared("tok/tokenizer.model")));
  const std::string text = "Hello, world of memory.";
  EXPECT_EQ(copy.encode(text), tok().encode(text));
}

TEST_F(TokenizerTest, LoadRejectsMissingAndCorruptModels) {
  expect_error([&] { Tokenizer::load(file("nothing")); }, {"no tokenizer in", "tokenizer.model not found"});
  write_bytes(file("tokenizer.model"), "this is not a protobuf \xFF\xFF\xFF");
  expect_error([&] { Tokenizer::load(dir_.string()); }, {"tokenizer.model", "not a valid sentencepiece model"});
  const std::string good = read_bytes(shared("tok/tokenizer.model"));
  write_bytes(file("tokenizer.model"), good.substr(0, good.size() / 2));
  expect_error([&] { Tokenizer::load(dir_.string()); }, {"not a valid sentencepiece model"});
}

TEST_F(TokenizerTest, TrainingIsReproducibleAndReplacesOnlyTheModel) {
  write_bytes(file("a.txt"), generated_corpus(30000, 7));
  // An existing directory keeps its other files; a fresh one is created
  // with its missing parents.
  fs::create_directories(file("existing"));
  write_bytes(file("existing/keep.txt"), "mine");
  write_bytes(file("existing/tokenizer.model"), "old");
  Tokenizer::train({file("a.txt")}, 400, file("existing"));
  Tokenizer::train({file("a.txt")}, 400, file("new/deeper/"));
  EXPECT_EQ(read_bytes(file("existing/keep.txt")), "mine");
  const std::string first = read_bytes(file("existing/tokenizer.model"));
  EXPECT_GT(first.size(), 1000u);
  // The model records no paths (of the temporary directory, say).
  EXPECT_TRUE(read_bytes(file("new/deeper/tokenizer.model")) == first) << "same input, same bytes";
  EXPECT_FALSE(fs::exists("tokenizer.model")) << "sentencepiece wrote into the working directory";
  EXPECT_EQ(Tokenizer::load(file("existing")).vocab_size(), 400);
  EXPECT_TRUE(entries_except({"a.txt", "existing", "new"}).empty()) << "temporary directory left behind";
  EXPECT_TRUE(fs::is_directory(file("new/deeper")));
  EXPECT_EQ(std::distance(fs::directory_iterator(file("new")), fs::directory_iterator()), 1);
}

TEST_F(TokenizerTest, TrainsOnJsonlTextNotItsSyntax) {
  std::string jsonl;
  const std::string corpus = generated_corpus(40000, 3);
  size_t start = 0;
  while (start < corpus.size()) {  // records of a few lines each, "\n" escaped
    size_t end = corpus.find('\n', std::min(corpus.size(), start + 300));
    end = end == std::string::npos ? corpus.size() : end + 1;
    std::string escaped;
    for (size_t i = start; i < end; ++i) {
      if (corpus[i] == '\n')
        escaped += "\\n";
      else if (corpus[i] == '\t')
        escaped += "\\t";
      else
        escaped += corpus[i];
    }
    jsonl += "{\"id\": 1, \"text\": \"" + escaped + "\"}\n";
    start = end;
  }
  jsonl += "\n";  // blank lines are skipped
  write_bytes(file("c.jsonl"), jsonl);
  Tokenizer::train({file("c.jsonl")}, 500, file("tok"));
  const Tokenizer t = Tokenizer::load(file("tok"));
  for (int id = 0; id < t.vocab_size(); ++id) {
    EXPECT_EQ(t.piece(id).find('{'), std::string::npos) << t.piece(id);
    EXPECT_EQ(t.piece(id).find("\\n"), std::string::npos) << t.piece(id);
  }
  EXPECT_GE(id_of_piece(t, "\xE2\x96\x81the"), 0);
}

TEST_F(TokenizerTest, VeryLongLinesAreUsed) {
  std::string line;
  while (line.size() < 60000) line += "memory engine \xC3\xA9t\xC3\xA9 ";  // été: cuts must respect UTF-8
  write_bytes(file("long.txt"), line);
  Tokenizer::train({file("long.txt")}, 290, file("tok"));
  const Tokenizer t = Tokenizer::load(file("tok"));
  EXPECT_LE(t.encode("memory engine \xC3\xA9t\xC3\xA9").size(), 3u) << "the long line was learned from";
}

TEST_F(TokenizerTest, RejectsBadVocabularySizes) {
  write_bytes(file("a.txt"), generated_corpus(20000));
  expect_error([&] { Tokenizer::train({file("a.txt")}, 260, file("out")); }, {"vocabulary size", "260"});
  expect_error([&] { Tokenizer::train({file("a.txt")}, 265, file("out")); },
               {"vocabulary size 265", "Vocabulary size is smaller than required_chars"});
  expect_error([&] { Tokenizer::train({file("a.txt")}, 100000, file("out")); },
               {"vocabulary size 100000", "Vocabulary size too high"});
  expect_error([&] { Tokenizer::train({}, 300, file("out")); }, {"at least one input file"});
  EXPECT_FALSE(fs::exists(file("out")));
  EXPECT_TRUE(entries_except({"a.txt"}).empty()) << "failed training left files behind";
}

TEST_F(TokenizerTest, RejectsBadInputFilesBeforeTraining) {
  write_bytes(file("good.txt"), generated_corpus(5000));
  write_bytes(file("empty.txt"), "");
  write_bytes(file("blank.txt"), "\n  \n\t\n");
  write_bytes(file("binary.txt"), std::string("abcd\n\0ef", 8));
  write_bytes(file("latin1.txt"), "line one\ncaf\xE9 au lait\n");
  write_bytes(file("surrogate.txt"), "x\xED\xA0\x80y");
  write_bytes(file("data.csv"), "a,b\n");
  write_bytes(file("bad.jsonl"), "{\"text\": \"fine\"}\n{\"text\": \n");
  write_bytes(file("notext.jsonl"), "{\"body\": \"fine\"}\n");
  write_bytes(file("nul.jsonl"), "{\"text\": \"a\\u0000b\"}\n");
  write_bytes(file("emptytext.jsonl"), "{\"text\": \"\"}\n\n");
  auto train = [&](const std::string& name) {
    return [this, name] { Tokenizer::train({file("good.txt"), file(name)}, 300, file("out")); };
  };
  expect_error(train("missing.txt"), {"missing.txt", "No such file"});
  expect_error(train("empty.txt"), {"empty.txt", "empty file"});
  expect_error(train("blank.txt"), {"blank.txt", "no text"});
  expect_error(train("binary.txt"), {"binary.txt", "NUL byte at byte offset 5", "line 2"});
  expect_error(train("latin1.txt"), {"latin1.txt", "invalid UTF-8 at byte offset 12", "line 2"});
  expect_error(train("surrogate.txt"), {"surrogate.txt", "invalid UTF-8 at byte offset 1"});
  expect_error(train("data.csv"), {"data.csv", "unsupported input type '.csv'"});
  expect_error(train("bad.jsonl"), {"bad.jsonl:2", "not valid JSON"});
  expect_error(train("notext.jsonl"), {"notext.jsonl:1", "string \"text\""});
  expect_error(train("nul.jsonl"), {"nul.jsonl:1", "NUL character"});
  expect_error(train("emptytext.jsonl"), {"emptytext.jsonl", "no text"});
  expect_error([&] { Tokenizer::train({file("good.txt")}, 300, file("good.txt")); },
               {"good.txt exists and is not a directory"});
  EXPECT_FALSE(fs::exists(file("out")));
}

}  // namespace
}  // namespace memoe
