// Corpus preparation: documents read from .txt and .jsonl, the deterministic
// train/val assignment, the shards it writes, and bad inputs that fail with
// one line naming the file and leave no output behind.
#include "train/prepare.h"

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/test_files.h"
#include "io/retrieval_text.h"
#include "io/tokenizer.h"

namespace memoe {
namespace {

namespace fs = std::filesystem;
using io_testing::read_bytes;
using io_testing::write_bytes;

// A byte-level stand-in for the tokenizer: byte b -> id b + 4, eot 3 (the
// layout of the real one), so tests can decode what was written.
TextEncoder byte_encoder() {
  TextEncoder e;
  e.encode = [](const std::string& text) {
    std::vector<int32_t> ids;
    for (unsigned char c : text) ids.push_back(int32_t(c) + 4);
    return ids;
  };
  e.vocab_size = 260;
  e.eot_id = 3;
  return e;
}

class Prepare : public io_testing::TempDirTest {
 protected:
  std::vector<std::string> documents_of(const std::string& path) {
    std::vector<std::string> docs;
    for_each_document(path, [&](const std::string& d) { docs.push_back(d); });
    return docs;
  }
  PrepareOptions options(std::vector<std::string> inputs, const std::string& out = "out") {
    PrepareOptions o;
    o.inputs = std::move(inputs);
    o.out_dir = file(out);
    o.val_fraction = 0.25;
    o.seed = 1;
    return o;
  }
  // The documents of a split, decoded from the byte encoder's ids.
  std::vector<std::string> split_documents(const std::string& dir, const std::string& split) {
    TokenSplitReader reader(dir, split);
    std::vector<int64_t> ids(size_t(reader.size()));
    reader.read(0, reader.size(), ids.data());
    std::vector<std::string> docs(1);
    for (int64_t id : ids) {
      if (id == 3) {
        docs.emplace_back();
      } else {
        docs.back() += char(id - 4);
      }
    }
    EXPECT_TRUE(docs.back().empty()) << "split does not end with eot";
    docs.pop_back();
    return docs;
  }
  // A .txt and a .jsonl holding documents "doc 0" .. "doc n-1" between them.
  std::vector<std::string> write_corpus(int n, std::vector<std::string>* docs) {
    std::string txt, jsonl;
    for (int i = 0; i < n; ++i) {
      const std::string d = "doc " + std::to_string(i) + (i % 3 == 0 ? "\nsecond line" : "");
      docs->push_back(d);
      if (i < n / 2) {
        txt += d + "\n\n";
      } else {
        jsonl += nlohmann::json{{"text", d}}.dump() + "\n";
      }
    }
    write_bytes(file("a.txt"), txt);
    write_bytes(file("b.jsonl"), jsonl);
    return {file("a.txt"), file("b.jsonl")};
  }
  // The message of the Error prepare throws; checks nothing was left behind.
  // Whether a temporary "OUT.tmp.*" is left beside OUT.
  static bool has_temporary(const std::string& out) {
    const fs::path p(out);
    for (const auto& e : fs::directory_iterator(p.parent_path()))
      if (e.path().filename().string().rfind(p.filename().string() + ".tmp", 0) == 0) return true;
    return false;
  }
  std::string prepare_error(const PrepareOptions& o) {
    std::string message;
    try {
      prepare_data(o, byte_encoder());
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      message = e.what();
    }
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
    EXPECT_FALSE(has_temporary(o.out_dir)) << message;
    return message;
  }
};

TEST_F(Prepare, TextDocumentsAreBlankLineSeparatedBlocks) {
  write_bytes(file("a.txt"), "\xEF\xBB\xBFone\r\nstill one\n\n \t\n\ntwo  \n\n\nthree");
  EXPECT_EQ(documents_of(file("a.txt")), (std::vector<std::string>{"one\nstill one", "two  ", "three"}));
}

TEST_F(Prepare, JsonlDocumentsAreTextFields) {
  write_bytes(file("a.jsonl"), "{\"text\": \"x\\ny\", \"id\": 7}\n\n{\"text\": \"\"}\n{\"text\":\"\\u00e9\"}\n");
  EXPECT_EQ(documents_of(file("a.jsonl")), (std::vector<std::string>{"x\ny", "\xC3\xA9"}));
}

TEST_F(Prepare, SplitsAreDeterministicByDocumentIndex) {
  std::vector<std::string> docs;
  const auto inputs = write_corpus(60, &docs);
  const TokenDataMeta meta = prepare_data(options(inputs), byte_encoder());
  std::vector<std::string> want_train, want_val;
  for (size_t i = 0; i < docs.size(); ++i) (goes_to_val(1, i, 0.25) ? want_val : want_train).push_back(docs[i]);
  ASSERT_FALSE(want_val.empty());
  EXPECT_EQ(split_documents(file("out"), "train"), want_train);
  EXPECT_EQ(split_documents(file("out"), "val"), want_val);
  EXPECT_EQ(meta.splits.at("val").documents, int64_t(want_val.size()));
  EXPECT_EQ(meta.splits.at("train").documents, int64_t(want_train.size()));
  EXPECT_EQ(read_token_meta(file("out")).sources, inputs);
  EXPECT_EQ(meta.eot_id, 3);
  EXPECT_FALSE(has_temporary(file("out")));

  // Same seed: the same bytes. Another seed: another val set.
  prepare_data(options(inputs, "again"), byte_encoder());
  EXPECT_EQ(read_bytes(file("again/val_00000.bin")), read_bytes(file("out/val_00000.bin")));
  EXPECT_EQ(read_bytes(file("again/train_00000.bin")), read_bytes(file("out/train_00000.bin")));
  PrepareOptions other = options(inputs, "other");
  other.seed = 2;
  prepare_data(other, byte_encoder());
  EXPECT_NE(split_documents(file("other"), "val"), want_val);
}

TEST_F(Prepare, ValFractionIsHonoured) {
  int64_t val = 0;
  const int64_t n = 200000;
  for (int64_t i = 0; i < n; ++i) val += goes_to_val(0, uint64_t(i), 0.005);
  EXPECT_NEAR(double(val) / n, 0.005, 0.0008);  // about 5 standard deviations
}

TEST_F(Prepare, LargeSplitsRollShards) {
  std::vector<std::string> docs;
  PrepareOptions o = options(write_corpus(60, &docs));
  o.max_shard_tokens = 50;
  const TokenDataMeta meta = prepare_data(o, byte_encoder());
  const auto& train = meta.splits.at("train");
  EXPECT_GT(train.shards.size(), 5u);
  for (size_t i = 0; i + 1 < train.shards.size(); ++i) EXPECT_EQ(train.shard_tokens[i], 50);
  EXPECT_EQ(split_documents(file("out"), "train").size(), size_t(train.documents));
}

TEST_F(Prepare, BadInputsNameTheFile) {
  write_bytes(file("ok.txt"), "fine\n");
  write_bytes(file("empty.txt"), "");
  write_bytes(file("blank.txt"), "\n  \n\n");
  write_bytes(file("binary.txt"), std::string("text\nmore\0bin", 13));
  write_bytes(file("latin1.txt"), "ok\nline two\ncaf\xE9\n");
  write_bytes(file("notjson.jsonl"), "{\"text\": \"a\"}\n{\"text\": \n");
  write_bytes(file("array.jsonl"), "[\"a\"]\n");
  write_bytes(file("number.jsonl"), "{\"text\": \"a\"}\n\n{\"text\": 5}\n");
  write_bytes(file("notext.jsonl"), "{\"body\": \"a\"}\n");
  write_bytes(file("data.csv"), "a,b\n");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"missing.txt", "cannot open " + file("missing.txt")},
      {"empty.txt", file("empty.txt") + ": empty file"},
      {"blank.txt", file("blank.txt") + ": no documents"},
      {"binary.txt", file("binary.txt") + ": binary data, not text (NUL byte at byte offset 9, line 2)"},
      {"latin1.txt", file("latin1.txt") + ": invalid UTF-8 at byte offset 15 (line 3)"},
      {"notjson.jsonl", file("notjson.jsonl") + ":2: not valid JSON"},
      {"array.jsonl", file("array.jsonl") + ":1: expected a JSON object with a string \"text\""},
      {"number.jsonl", file("number.jsonl") + ":3: expected a JSON object with a string \"text\""},
      {"notext.jsonl", file("notext.jsonl") + ":1: expected a JSON object with a string \"text\""},
      {"data.csv", "unsupported input type '.csv'"},
  };
  for (const auto& [name, expect] : cases) {
    // The bad file comes second, so a failure midway must also clean up.
    const std::string e = prepare_error(options({file("ok.txt"), file(name)}));
    EXPECT_NE(e.find(expect), std::string::npos) << name << ": " << e;
    EXPECT_FALSE(fs::exists(file("out"))) << name;
  }
}

TEST_F(Prepare, EachSplitNeedsADocument) {
  write_bytes(file("one.txt"), "only document\n");
  const std::string e = prepare_error(options({file("one.txt")}));
  EXPECT_NE(e.find("need at least one document in each split"), std::string::npos) << e;
  EXPECT_TRUE(e.find("train 1 and val 0") != std::string::npos || e.find("train 0 and val 1") != std::string::npos)
      << e;
  EXPECT_FALSE(fs::exists(file("out")));
}

TEST_F(Prepare, ExistingOutputIsNotOverwritten) {
  std::vector<std::string> docs;
  const auto inputs = write_corpus(20, &docs);
  fs::create_directories(file("out"));
  EXPECT_NE(prepare_error(options(inputs)).find("already exists"), std::string::npos);
  PrepareOptions o = options(inputs, "x");
  o.val_fraction = 0;
  EXPECT_NE(prepare_error(o).find("--val-fraction"), std::string::npos);
}

// ---------------------------------------------------------------- with the real tokenizer

class PrepareWithTokenizer : public Prepare {
 protected:
  static void SetUpTestSuite() {
    corpus_dir_ = fs::temp_directory_path() / ("memoe_prepare_tok_" + std::to_string(::getpid()));
    fs::remove_all(corpus_dir_);
    fs::create_directories(corpus_dir_);
    std::string text;
    for (int i = 0; i < 300; ++i)
      text += "the quick brown fox " + std::to_string(i) + " jumps over the lazy dog\nline two of it\n\n";
    write_bytes((corpus_dir_ / "corpus.txt").string(), text);
    Tokenizer::train({(corpus_dir_ / "corpus.txt").string()}, 320, (corpus_dir_ / "tok").string());
  }
  static void TearDownTestSuite() { fs::remove_all(corpus_dir_); }
  static std::string corpus() { return (corpus_dir_ / "corpus.txt").string(); }
  static std::string tokenizer() { return (corpus_dir_ / "tok").string(); }
  static fs::path corpus_dir_;
};
fs::path PrepareWithTokenizer::corpus_dir_;

TEST_F(PrepareWithTokenizer, DocumentsDecodeBackAndEndWithEos) {
  PrepareOptions o = options({corpus()});
  o.tokenizer_dir = tokenizer();
  o.val_fraction = 0.1;
  const TokenDataMeta meta = prepare_data(o);
  const Tokenizer tok = Tokenizer::load(tokenizer());
  EXPECT_EQ(meta.vocab_size, 320);
  EXPECT_EQ(meta.eot_id, Tokenizer::kEosId);
  EXPECT_EQ(meta.splits.at("train").documents + meta.splits.at("val").documents, 300);
  std::set<std::string> seen;
  for (const std::string split : {"train", "val"}) {
    TokenSplitReader reader(file("out"), split);
    std::vector<int64_t> ids(size_t(reader.size()));
    reader.read(0, reader.size(), ids.data());
    ASSERT_EQ(ids.back(), Tokenizer::kEosId);
    std::vector<int32_t> doc;
    for (int64_t id : ids) {
      if (id != Tokenizer::kEosId) {
        doc.push_back(int32_t(id));
        continue;
      }
      const std::string text = tok.decode(doc);
      EXPECT_NE(text.find(" jumps over the lazy dog\nline two of it"), std::string::npos) << text;
      EXPECT_TRUE(seen.insert(text).second) << "twice: " << text;
      doc.clear();
    }
  }
  EXPECT_EQ(seen.size(), 300u);
}

TEST_F(PrepareWithTokenizer, MissingTokenizerDirectory) {
  PrepareOptions o = options({corpus()});
  o.tokenizer_dir = file("no_tokenizer");
  try {
    prepare_data(o);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--tokenizer " + file("no_tokenizer") + ": no such directory"),
              std::string::npos)
        << e.what();
  }
  EXPECT_FALSE(fs::exists(file("out")));
}

// The command line: a summary on success, one line and a non-zero exit on
// bad input.
TEST_F(PrepareWithTokenizer, CommandLine) {
  auto run = [&](const std::string& args, std::string* err) {
    const std::string cmd =
        std::string(MEMOE_CLI) + " prepare " + args + " >" + file("stdout") + " 2>" + file("stderr");
    const int raw = std::system(cmd.c_str());
    *err = read_bytes(file("stderr"));
    return WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  };
  std::string err;
  EXPECT_EQ(run("--input " + corpus() + " --tokenizer " + tokenizer() + " --out " + file("out") + " --val-fraction 0.2",
                &err),
            0)
      << err;
  EXPECT_NE(read_bytes(file("stdout")).find("train"), std::string::npos);
  EXPECT_EQ(read_token_meta(file("out")).splits.size(), 2u);

  write_bytes(file("bad.jsonl"), "{\"text\": 1}\n");
  EXPECT_EQ(run("--input " + file("bad.jsonl") + " --tokenizer " + tokenizer() + " --out " + file("out2"), &err), 1);
  EXPECT_NE(err.find(file("bad.jsonl") + ":1:"), std::string::npos) << err;
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
  EXPECT_FALSE(fs::exists(file("out2")));
}

}  // namespace
}  // namespace memoe

namespace memoe {
namespace {

TEST_F(Prepare, RetrievalMixAddsTrainingSpaceDocumentsAtItsShareOfTheTrainTokens) {
  // A corpus of longer documents (the retrieval filler is cut from them).
  std::string txt;
  for (int i = 0; i < 200; ++i) {
    for (int w = 0; w < 40; ++w) txt += "word" + std::to_string((i * 7 + w) % 13) + " ";
    txt += "\n\n";
  }
  write_bytes(file("c.txt"), txt);
  PrepareOptions plain = options({file("c.txt")}, "plain"), mixed = options({file("c.txt")}, "mixed");
  mixed.retrieval_mix = 0.3;
  mixed.retrieval_length = 600;  // characters: one token each here
  const TokenDataMeta a = prepare_data(plain, byte_encoder()), b = prepare_data(mixed, byte_encoder());
  // The held-out split is the corpus alone.
  EXPECT_EQ(split_documents(file("plain"), "val"), split_documents(file("mixed"), "val"));
  const double share =
      double(b.splits.at("train").tokens - a.splits.at("train").tokens) / double(b.splits.at("train").tokens);
  EXPECT_NEAR(share, 0.3, 0.02);
  // Every retrieval document: needles with training-space keys and values,
  // then the question, then the answer with the asked key's value(s).
  int retrieval = 0;
  for (const std::string& doc : split_documents(file("mixed"), "train")) {
    if (doc.find("special magic number") == std::string::npos) continue;
    ++retrieval;
    EXPECT_LE(doc.size(), 600u);
    const std::string needle = "One of the special magic numbers for ";
    std::map<std::string, std::vector<std::string>> values;
    for (size_t at = doc.find(needle); at != std::string::npos; at = doc.find(needle, at + 1)) {
      const size_t key_end = doc.find(" is: ", at);
      const std::string key = doc.substr(at + needle.size(), key_end - at - needle.size());
      const std::string value = doc.substr(key_end + 5, 7);
      EXPECT_EQ(key_space(key), KeySpace::training) << key;
      EXPECT_EQ(value_space(value), KeySpace::training) << value;
      values[key].push_back(value);
    }
    const size_t question = doc.find("\nWhat ");
    ASSERT_NE(question, std::string::npos) << doc;
    const size_t answer = doc.find("mentioned in the provided text ", question + 10);
    ASSERT_NE(answer, std::string::npos) << doc;
    for (const auto& [key, vs] : values) {
      if (doc.find(key, question) == std::string::npos) continue;  // a distractor, not asked
      for (const std::string& v : vs) EXPECT_NE(doc.find(v, question), std::string::npos) << doc;
    }
  }
  EXPECT_GT(retrieval, 10);
  PrepareOptions bad = options({file("c.txt")}, "bad");
  bad.retrieval_mix = 1.0;
  EXPECT_THROW(prepare_data(bad, byte_encoder()), Error);
}

}  // namespace
}  // namespace memoe
