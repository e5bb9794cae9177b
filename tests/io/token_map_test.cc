// Engram compressed token map (spec §5.1): the normalisation against
// expectations computed with Python's unicodedata (3.11, Unicode 14), and
// the map built from a trained tokenizer.
#include "io/token_map.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "test_files.h"
#include "tokenizer_corpus.h"

namespace memoe {
namespace {

namespace fs = std::filesystem;

struct Case {
  std::string text, expected;
};

// Expected values are Python's
//   s = NFKC(text); s = NFD(s); drop Mn; s = s.lower();
//   s = re.sub('[ \t\r\n]+', ' ', s); strip White_Space unless s == ' '
TEST(TokenMapNormalize, MatchesPythonOnTrickyStrings) {
  const std::vector<Case> cases = {
      {"Caf\u00e9", "cafe"},                                             // precomposed accent
      {"CAF\u00c9", "cafe"},
      {"cafe\u0301", "cafe"},                                            // combining accent
      {"\ufb01", "fi"},                                                  // ligature
      {"\uff28\uff45\uff4c\uff4c\uff4f", "hello"},                       // full-width
      {"\u0130", "i"},                                                   // İ: NFD splits off the dot
      {"\u0130stanbul", "istanbul"},
      {"\u039f\u0394\u039f\u03a3", "\u03bf\u03b4\u03bf\u03c2"},          // ΟΔΟΣ -> οδος (final sigma)
      {"\u039f\u0394\u039f\u03a3.", "\u03bf\u03b4\u03bf\u03c2."},        // '.' is case-ignorable
      {"\u03a3\u0391", "\u03c3\u03b1"},                                  // ΣΑ: not final
      {"\u03a3", "\u03c3"},                                              // no cased letter before
      {"\tHello\n", "hello"},
      {"  ", " "},
      {"\t", " "},
      {" \t\n ", " "},
      {"a  b", "a b"},
      {"a\t\r\nb", "a b"},
      {"\u00a0", " "},                                                   // NBSP -> space by NFKC
      {"\u00a0x", "x"},
      {"\u3000", " "},                                                   // ideographic space
      {"\u2028", ""},                                                    // White_Space, not collapsed
      {"\u00df", "\u00df"},                                              // ß: lowercase, not casefold
      {"\u1e9e", "\u00df"},
      {"\u2126", "\u03c9"},                                              // ohm sign
      {"\u212b", "a"},                                                   // angstrom sign
      {"\u01c5", "dz"},                                                  // titlecase digraph
      {"\u2460", "1"},                                                   // circled digit
      {"\u00bd", "1\u20442"},
      {"\u210c", "h"},
      {"\u00f1", "n"},
      {"\u216b", "xii"},                                                 // roman numeral
      {"\uff76\uff9e", "\u30ab"},                                        // half-width kana + voicing
      {"\ud55c", "\u1112\u1161\u11ab"},                                  // Hangul stays decomposed
      {"\u200b", "\u200b"},                                              // zero-width space: Cf
      {"A\u00ad", "a\u00ad"},                                            // soft hyphen: Cf
      {"Stra\u00dfe", "stra\u00dfe"},
      {" The", "the"},
      {"\u2581", "\u2581"},                                              // the piece mark itself
      {std::string("A\0", 2), std::string("a\0", 2)},                    // NUL is not whitespace
      // Python's str.strip() also strips U+001C..U+001F (bidi separators);
      // the spec's "Unicode whitespace" (White_Space) does not.
      {"a\x1c", "a\x1c"},
  };
  for (const auto& c : cases) EXPECT_EQ(normalize_token_text(c.text), c.expected) << "text: " << c.text;
}

TEST(TokenMapNormalize, RejectsInvalidUtf8) {
  EXPECT_THROW(normalize_token_text("ab\xFF"), Error);
  EXPECT_THROW(normalize_token_text("\xC0\x80"), Error);  // overlong NUL
}

TEST(TokenMapKey, FallsBackToPieceOrText) {
  EXPECT_EQ(token_map_key(" Hello", "\xE2\x96\x81Hello"), "hello");
  EXPECT_EQ(token_map_key("\xEF\xBF\xBD", "<0xC3>"), "<0xC3>") << "U+FFFD: the raw piece";
  EXPECT_EQ(token_map_key("x\xEF\xBF\xBDy", "x\xEF\xBF\xBDy!"), "x\xEF\xBF\xBDy!");
  EXPECT_EQ(token_map_key("\u2028", "\u2028"), "\u2028") << "normalises to nothing: the text itself";
  EXPECT_EQ(token_map_key("\t", "<0x09>"), " ");
}

class TokenMapTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("memoe_" + std::to_string(::getpid()) + "_TokenMapShared");
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    io_testing::write_bytes((dir_ / "corpus.txt").string(), io_testing::generated_corpus(150000));
    Tokenizer::train({(dir_ / "corpus.txt").string()}, kVocab, (dir_ / "tok").string());
    tok_ = std::make_unique<Tokenizer>(Tokenizer::load((dir_ / "tok").string()));
  }
  static void TearDownTestSuite() {
    tok_.reset();
    fs::remove_all(dir_);
  }
  static const Tokenizer& tok() { return *tok_; }
  static int id_of(const std::string& piece) {
    for (int id = 0; id < tok().vocab_size(); ++id)
      if (tok().piece(id) == piece) return id;
    ADD_FAILURE() << "no piece " << piece;
    return 0;
  }

  static constexpr int kVocab = 800;
  static inline fs::path dir_;
  static inline std::unique_ptr<Tokenizer> tok_;
};

constexpr int kByte0 = 4;  // id of <0x00>

TEST_F(TokenMapTest, MergesCaseAccentAndSpaceVariants) {
  const auto map = compressed_token_map(tok(), kVocab);
  ASSERT_EQ(map.size(), size_t(kVocab));
  const std::string mark = "\xE2\x96\x81";  // ▁
  // Case and leading-space variants of one word (the corpus has all four).
  EXPECT_EQ(map[id_of(mark + "the")], map[id_of(mark + "The")]);
  EXPECT_EQ(map[id_of(mark + "the")], map[id_of("the")]);
  EXPECT_EQ(map[id_of(mark + "the")], map[id_of(mark + "THE")]);
  // Accents: ▁café and ▁cafe; bytes 'A' and 'a'.
  EXPECT_EQ(map[id_of(mark + "caf\xC3\xA9")], map[id_of(mark + "cafe")]);
  EXPECT_EQ(map[kByte0 + 'A'], map[kByte0 + 'a']);
  // All-whitespace tokens are the single key " ".
  const int64_t space = map[kByte0 + ' '];
  EXPECT_EQ(map[kByte0 + '\n'], space);
  EXPECT_EQ(map[kByte0 + '\t'], space);
  EXPECT_EQ(map[kByte0 + '\r'], space);
  EXPECT_EQ(map[id_of(mark)], space);
  EXPECT_EQ(map[id_of(mark + mark)], space);
  // Different words stay apart.
  EXPECT_NE(map[id_of(mark + "the")], map[id_of(mark + "and")]);
  EXPECT_NE(map[kByte0 + 'a'], map[kByte0 + 'b']);
  EXPECT_NE(map[kByte0 + 'a'], space);
}

TEST_F(TokenMapTest, SpecialAndIncompleteBytePiecesKeepTheirOwnIds) {
  const auto map = compressed_token_map(tok(), kVocab);
  // First appearance: pad, unk, bos, eos, <0x00> are ids 0..4.
  EXPECT_EQ(std::vector<int64_t>(map.begin(), map.begin() + 5), (std::vector<int64_t>{0, 1, 2, 3, 4}));
  // Bytes 0x80..0xFF decode to U+FFFD, so their raw pieces are their keys.
  std::set<int64_t> high;
  for (int b = 0x80; b <= 0xFF; ++b) high.insert(map[kByte0 + b]);
  EXPECT_EQ(high.size(), 128u);
  EXPECT_EQ(high.count(map[kByte0 + 'a']), 0u);
}

TEST_F(TokenMapTest, NumbersKeysInOrderOfFirstAppearance) {
  const auto map = compressed_token_map(tok(), kVocab);
  int64_t next = 0;
  for (size_t t = 0; t < map.size(); ++t) {
    ASSERT_LE(map[t], next) << "id " << t << " skips ahead";
    if (map[t] == next) ++next;
  }
  EXPECT_LT(next, kVocab) << "some ids must share keys";
  EXPECT_EQ(*std::max_element(map.begin(), map.end()) + 1, next);
  // Same tokenizer, same map.
  EXPECT_EQ(compressed_token_map(tok(), kVocab), map);
}

TEST_F(TokenMapTest, PaddingRowsGetIdsOfTheirOwn) {
  const auto base = compressed_token_map(tok(), kVocab);
  const auto map = compressed_token_map(tok(), kVocab + 5);
  ASSERT_EQ(map.size(), size_t(kVocab + 5));
  EXPECT_TRUE(std::equal(base.begin(), base.end(), map.begin()));
  const int64_t keys = *std::max_element(base.begin(), base.end()) + 1;
  for (int i = 0; i < 5; ++i) EXPECT_EQ(map[size_t(kVocab + i)], keys + i);
}

TEST_F(TokenMapTest, RejectsAModelVocabularySmallerThanTheTokenizer) {
  try {
    compressed_token_map(tok(), kVocab - 1);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("800"), std::string::npos) << msg;
    EXPECT_NE(msg.find("799"), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace memoe
