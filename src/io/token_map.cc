#include "io/token_map.h"

#include <utf8proc.h>

#include <cstdlib>
#include <unordered_map>

#include "core/error.h"
#include "io/utf8.h"

namespace memoe {

namespace {

constexpr int32_t kCapitalSigma = 0x03A3, kFinalSigma = 0x03C2;
constexpr int32_t kCapitalIWithDot = 0x0130, kCombiningDotAbove = 0x0307;

// One utf8proc_map pass over valid UTF-8.
std::string utf8proc_transform(const std::string& text, int options) {
  utf8proc_uint8_t* out = nullptr;
  const utf8proc_ssize_t len = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                                            utf8proc_ssize_t(text.size()), &out, utf8proc_option_t(options));
  MEMOE_CHECK(len >= 0, "cannot normalise token text: ", utf8proc_errmsg(len));
  std::string result(reinterpret_cast<const char*>(out), size_t(len));
  std::free(out);
  return result;
}

// Unicode's Cased property: Lu, Ll, Lt, Other_Lowercase, Other_Uppercase.
// Checked against Python over every code point that survives NFKC: all the
// Other_* ones there have case mappings, except the negative circled and
// squared capitals (So, no mapping), listed here.
bool is_cased(int32_t c) {
  const auto cat = utf8proc_category(c);
  if (cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL || cat == UTF8PROC_CATEGORY_LT) return true;
  if ((c >= 0x1F150 && c <= 0x1F169) || (c >= 0x1F170 && c <= 0x1F189)) return true;
  return utf8proc_tolower(c) != c || utf8proc_toupper(c) != c;
}

// Unicode's Case_Ignorable property: Mn, Me, Cf, Lm, Sk, and the
// Word_Break classes MidLetter, MidNumLet and Single_Quote.
bool is_case_ignorable(int32_t c) {
  switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_SK:
      return true;
    default:
      break;
  }
  switch (c) {
    case 0x0027: case 0x002E: case 0x003A: case 0x00B7: case 0x0387: case 0x055F: case 0x05F4:
    case 0x2018: case 0x2019: case 0x2024: case 0x2027: case 0xFE13: case 0xFE52: case 0xFE55:
    case 0xFF07: case 0xFF0E: case 0xFF1A:
      return true;
    default:
      return false;
  }
}

// SpecialCasing's Final_Sigma: a cased letter (skipping case-ignorables)
// before position i, and none after it.
bool final_sigma_at(const std::vector<int32_t>& cps, size_t i) {
  size_t j = i;
  while (j > 0 && is_case_ignorable(cps[j - 1])) --j;
  if (j == 0 || !is_cased(cps[j - 1])) return false;
  for (size_t k = i + 1; k < cps.size(); ++k)
    if (!is_case_ignorable(cps[k])) return !is_cased(cps[k]);
  return true;
}

// Unicode White_Space.
bool is_white_space(int32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

bool is_collapsed_space(int32_t c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

}  // namespace

std::string normalize_token_text(const std::string& text) {
  const size_t bad = find_invalid_utf8(text);
  MEMOE_CHECK(bad == std::string_view::npos, "token text is not valid UTF-8 (byte offset ", bad, ")");
  const std::string nfkc = utf8proc_transform(text, UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT);
  const std::string nfd = utf8proc_transform(nfkc, UTF8PROC_STABLE | UTF8PROC_DECOMPOSE);

  std::vector<int32_t> marked = utf8_to_code_points(nfd, "token text");
  std::erase_if(marked, [](int32_t c) { return utf8proc_category(c) == UTF8PROC_CATEGORY_MN; });

  // Lowercase (context comes from the string before lowercasing), then
  // collapse whitespace runs.
  std::vector<int32_t> lower;
  lower.reserve(marked.size() + 1);
  for (size_t i = 0; i < marked.size(); ++i) {
    const int32_t c = marked[i];
    int32_t out = utf8proc_tolower(c);
    if (c == kCapitalSigma && final_sigma_at(marked, i)) out = kFinalSigma;
    if (is_collapsed_space(out)) {
      if (lower.empty() || lower.back() != ' ') lower.push_back(' ');
      continue;
    }
    lower.push_back(out);
    if (c == kCapitalIWithDot) lower.push_back(kCombiningDotAbove);
  }

  size_t begin = 0, end = lower.size();
  if (!(lower.size() == 1 && lower[0] == ' ')) {
    while (begin < end && is_white_space(lower[begin])) ++begin;
    while (end > begin && is_white_space(lower[end - 1])) --end;
  }
  std::string result;
  result.reserve(nfd.size());
  for (size_t i = begin; i < end; ++i) append_utf8(result, lower[i]);
  return result;
}

std::string token_map_key(const std::string& text, const std::string& piece) {
  if (text.find(kReplacementChar) != std::string::npos) return piece;
  std::string key = normalize_token_text(text);
  return key.empty() ? text : key;
}

std::vector<int64_t> compressed_token_map(const Tokenizer& tok, int64_t model_vocab_size) {
  const int64_t tokenizer_size = tok.vocab_size();
  MEMOE_CHECK(tokenizer_size <= model_vocab_size, "the tokenizer has ", tokenizer_size,
              " tokens but the model's vocab_size is ", model_vocab_size);
  std::vector<int64_t> map(static_cast<size_t>(model_vocab_size));
  std::unordered_map<std::string, int64_t> ids;
  int64_t next_id = 0;
  for (int64_t t = 0; t < tokenizer_size; ++t) {
    const auto [it, inserted] = ids.try_emplace(token_map_key(tok.decode_one(int(t)), tok.piece(int(t))), next_id);
    if (inserted) ++next_id;
    map[size_t(t)] = it->second;
  }
  for (int64_t t = tokenizer_size; t < model_vocab_size; ++t) map[size_t(t)] = next_id++;
  return map;
}

}  // namespace memoe
