// A generated English-like corpus for the tokenizer tests: a few frequent
// words in lower, Capitalised, UPPER and accented spellings, so a small BPE
// vocabulary learns case variants of the same word (what the Engram token
// map merges). Deterministic: the same arguments give the same text.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace memoe::io_testing {

inline std::string generated_corpus(size_t approx_bytes, uint32_t seed = 1) {
  static const std::vector<std::string> words = {
      "the",    "of",     "and",   "hello", "world",  "model", "memory", "token", "engine", "data",
      "train",  "value",  "expert", "layer", "route",  "cafe",  "table",  "small", "large",  "river",
      "stone",  "light",  "house",  "water", "people", "time",  "year",   "place", "story",  "number"};
  uint32_t state = seed;
  auto next = [&](uint32_t n) {
    state = state * 1664525u + 1013904223u;
    return (state >> 8) % n;
  };
  std::string text;
  while (text.size() < approx_bytes) {
    if (next(10) == 0) text += "\t";
    const uint32_t len = 5 + next(10);
    for (uint32_t w = 0; w < len; ++w) {
      std::string word = words[next(uint32_t(words.size()))];
      const uint32_t style = next(20);
      if (style < 4) {
        word[0] = char(word[0] - 'a' + 'A');
      } else if (style == 4) {
        for (char& c : word) c = char(c - 'a' + 'A');
      } else if (style == 5) {
        const size_t e = word.find('e');
        if (e != std::string::npos) word.replace(e, 1, "\xC3\xA9");  // é
      }
      if (w) text += next(15) == 0 ? "  " : " ";
      text += word;
      if (next(12) == 0) text += std::to_string(next(1000));
      if (next(25) == 0) text += " \xCE\x9F\xCE\x94\xCE\x9F\xCE\xA3";  // ΟΔΟΣ
    }
    text += ".,!?"[next(4)];
    text += next(5) == 0 ? "\n\n" : "\n";
  }
  return text;
}

}  // namespace memoe::io_testing
