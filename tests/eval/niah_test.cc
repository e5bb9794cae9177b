// The needle-in-a-haystack suite on constructed cases: a byte-level codec
// (every character one token), so each prompt can be read back, and stub
// answerers whose answers are known, so the scores and the report are too.
#include "eval/niah.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>

#include "core/error.h"
#include "io/test_files.h"

namespace memoe {
namespace {

NiahCodec byte_codec() {
  NiahCodec c;
  c.encode = [](const std::string& s) {
    std::vector<int32_t> ids;
    for (unsigned char ch : s) ids.push_back(int32_t(ch) + 4);
    return ids;
  };
  c.decode = [](const std::vector<int32_t>& ids) {
    std::string s;
    for (int32_t id : ids)
      if (id >= 4) s += char(id - 4);
    return s;
  };
  c.document_start = 3;
  c.starts_word = [](int32_t id) { return id == ' ' + 4; };
  return c;
}

std::vector<int32_t> haystack_of(int64_t tokens) {
  std::string text;
  for (int i = 0; text.size() < size_t(tokens); ++i) text += "filler " + std::to_string(i % 97) + " words. ";
  return byte_codec().encode(text.substr(0, size_t(tokens)));
}

NiahOptions small_options() {
  NiahOptions o;
  o.lengths = {600, 1200};
  o.depths = {0, 50, 100};
  o.samples = 2;
  o.seed = 7;
  return o;
}

// The value a perfect reader gives: the needles' text in the prompt, read
// for the asked keys.
std::string oracle(const NiahSample& s, const NiahCodec& codec, double visible_fraction = 1.0) {
  const std::string text = codec.decode(s.ids);
  const std::string seen = text.substr(0, size_t(double(text.size()) * visible_fraction));
  std::string answer;
  for (const std::string& key : s.asked_keys) {
    const std::regex needle("magic numbers for " + key + " is: ([0-9]+)\\.");
    for (auto it = std::sregex_iterator(seen.begin(), seen.end(), needle); it != std::sregex_iterator(); ++it)
      answer.append(" ").append((*it)[1].str());
  }
  return answer;
}

class Niah : public io_testing::TempDirTest {};

TEST_F(Niah, PromptsHaveTheirLengthTheirNeedlesAtTheirDepthAndEvaluationKeysOnly) {
  const NiahCodec codec = byte_codec();
  const NiahOptions o = small_options();
  const std::vector<NiahSample> suite = build_niah_suite(o, codec, haystack_of(5000));
  ASSERT_EQ(suite.size(), 4u * 2 * 3 * 2);
  for (const NiahSample& s : suite) {
    EXPECT_EQ(int64_t(s.ids.size()), s.length);
    EXPECT_EQ(s.ids[0], codec.document_start);
    const std::string text = codec.decode(s.ids);
    for (const NiahNeedle& n : s.needles) {
      const std::vector<int32_t> piece(s.ids.begin() + n.position, s.ids.begin() + n.position + n.tokens);
      EXPECT_EQ(codec.decode(piece), needle_text(n.key, n.value));
      EXPECT_EQ(key_space(n.key), KeySpace::evaluation);
      EXPECT_EQ(value_space(n.value), KeySpace::evaluation);
    }
    // The first needle sits at its depth of the haystack (the prompt less
    // the start token, the needles and the question), up to the 16 tokens
    // it may move to start at a word.
    const int64_t question = int64_t(text.rfind("\nWhat")) + 1;  // one token per character, after the start token
    int64_t needle_tokens = 0, before = 0;
    for (const NiahNeedle& n : s.needles) {
      needle_tokens += n.tokens;
      if (n.position < s.needles[0].position) before += n.tokens;
    }
    const int64_t hay = s.length - 1 - needle_tokens - (s.length - question);
    const int64_t place = s.needles[0].position - 1 - before;
    EXPECT_LE(std::abs(double(place) - s.depth / 100.0 * double(hay)), 16.5)
        << retrieval_task_name(s.task) << " depth " << s.depth;
    // The question asks for the keys; the expected values are the asked keys' needles'.
    for (const std::string& k : s.asked_keys) EXPECT_NE(text.find(k, text.rfind("\nWhat")), std::string::npos);
    EXPECT_EQ(niah_score(s, oracle(s, codec)), 1.0) << text;
  }
  // The tasks differ as RULER's do.
  for (const NiahSample& s : suite) {
    switch (s.task) {
      case RetrievalTask::single: EXPECT_EQ(s.needles.size(), 1u); EXPECT_EQ(s.expected.size(), 1u); break;
      case RetrievalTask::multikey: {
        EXPECT_EQ(s.needles.size(), 4u);
        EXPECT_EQ(s.expected.size(), 1u);
        // A near miss: a distractor shares a word with the asked key.
        const std::string& k = s.asked_keys[0];
        const std::string adjective = k.substr(0, k.find('-')), noun = k.substr(k.find('-') + 1);
        bool near = false;
        for (size_t n = 1; n < s.needles.size(); ++n)
          near |= s.needles[n].key.rfind(adjective + "-", 0) == 0 || s.needles[n].key.ends_with("-" + noun);
        EXPECT_TRUE(near) << k;
        break;
      }
      case RetrievalTask::multivalue: EXPECT_EQ(s.expected.size(), 3u); EXPECT_EQ(s.asked_keys.size(), 1u); break;
      case RetrievalTask::multiquery: EXPECT_EQ(s.asked_keys.size(), 3u); EXPECT_EQ(s.expected.size(), 3u); break;
    }
  }
  // Deterministic for a seed; another seed, other needles.
  const std::vector<NiahSample> again = build_niah_suite(o, codec, haystack_of(5000));
  NiahOptions other = o;
  other.seed = 8;
  const std::vector<NiahSample> changed = build_niah_suite(other, codec, haystack_of(5000));
  int differ = 0;
  for (size_t i = 0; i < suite.size(); ++i) {
    EXPECT_EQ(suite[i].ids, again[i].ids);
    differ += suite[i].ids != changed[i].ids;
  }
  EXPECT_GT(differ, int(suite.size()) / 2);
}

TEST_F(Niah, ScoresEachExpectedValueByExactMatch) {
  NiahSample s;
  s.expected = {"1234567", "7654321"};
  EXPECT_EQ(niah_score(s, " 1234567 and 7654321."), 1.0);
  EXPECT_EQ(niah_score(s, " 7654321"), 0.5);
  EXPECT_EQ(niah_score(s, " 12345678, 0765432"), 0.0);  // inside a longer number, or one digit off
  EXPECT_EQ(niah_score(s, ""), 0.0);
}

TEST_F(Niah, AStubThatSeesHalfTheContextScoresByDepthAndTheReportSaysSo) {
  const NiahCodec codec = byte_codec();
  NiahOptions o = small_options();
  o.tasks = {RetrievalTask::single, RetrievalTask::multiquery};
  const std::vector<NiahSample> suite = build_niah_suite(o, codec, haystack_of(5000));
  std::vector<NiahAnswer> answers;
  for (const NiahSample& s : suite) {
    NiahAnswer a;
    a.text = oracle(s, codec, 0.5);  // a reader that forgets the second half
    a.score = niah_score(s, a.text);
    answers.push_back(a);
  }
  write_niah_report(dir_.string(), suite, answers, "stub");
  std::ifstream in(file("summary.json"));
  const auto j = nlohmann::json::parse(in);
  for (const auto& cell : j.at("tasks").at("single").at("cells")) {
    const int depth = cell.at("depth");
    const double acc = cell.at("accuracy");
    if (depth == 0) {
      EXPECT_EQ(acc, 1.0);
    } else if (depth == 100) {
      EXPECT_EQ(acc, 0.0);
    }
  }
  const double single = j["tasks"]["single"]["accuracy"];
  EXPECT_GT(single, 0.2);
  EXPECT_LT(single, 0.8);
  for (const char* f : {"samples.jsonl", "summary.csv", "niah_single.png", "niah_multiquery.png"})
    EXPECT_TRUE(std::filesystem::exists(file(f))) << f;
  std::ifstream csv(file("summary.csv"));
  std::string header;
  std::getline(csv, header);
  EXPECT_EQ(header, "task,length,depth,accuracy,samples");
  write_niah_prompts(dir_.string(), suite, codec);
  std::ifstream prompts(file("prompts.jsonl"));
  std::string line;
  std::getline(prompts, line);
  const auto first = nlohmann::json::parse(line);
  EXPECT_EQ(first.at("ids").size(), size_t(first.at("length").get<int64_t>()));
  EXPECT_EQ(first.at("needles").at(0).at("position").get<int64_t>(), suite[0].needles[0].position);
}

TEST_F(Niah, BadSuitesAreOneLine) {
  const NiahCodec codec = byte_codec();
  auto message = [&](NiahOptions o, int64_t haystack) {
    try {
      build_niah_suite(o, codec, haystack_of(haystack));
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  NiahOptions o = small_options();
  EXPECT_NE(message(o, 1000).find("fewer than the longest length 1200"), std::string::npos);
  o.lengths = {100};
  EXPECT_NE(message(o, 5000).find("too short for a single prompt"), std::string::npos);
  o = small_options();
  o.depths = {120};
  EXPECT_NE(message(o, 5000).find("depth 120 is outside 0..100"), std::string::npos);
  try {
    parse_retrieval_task("needle");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown retrieval task 'needle'"), std::string::npos);
  }
}

}  // namespace
}  // namespace memoe
