// The Engram compressed token map (spec §5.1): token ids whose texts differ
// only by case, accents, Unicode form or surrounding whitespace share one
// compressed id.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "io/tokenizer.h"

namespace memoe {

// The §5.1 normalisation of valid UTF-8: NFKC -> NFD -> drop category Mn ->
// full lowercase -> each run of [ \t\r\n] becomes one space -> unless the
// result is exactly " ", strip Unicode whitespace (the White_Space property)
// at both ends. May return "". Invalid UTF-8 is an error.
//
// Full lowercase = utf8proc's per-code-point (simple) lowercase plus the two
// SpecialCasing rules that are not language-specific: U+0130 -> "i\u0307"
// (unreachable here: NFD has already split it) and the Final_Sigma context
// (capital sigma at the end of a word -> U+03C2), as Python's str.lower()
// and Rust's to_lowercase() do. Unicode data is utf8proc's (Unicode 15).
std::string normalize_token_text(const std::string& text);

// The map key of one token: its raw piece if its text contains U+FFFD, else
// normalize_token_text(text), or text itself where that is empty.
std::string token_map_key(const std::string& text, const std::string& piece);

// token id -> compressed id for ids 0..model_vocab_size-1: keys numbered in
// order of first appearance; ids past the tokenizer's vocabulary (padding
// rows) get an id of their own each. Error if the tokenizer is larger than
// model_vocab_size.
std::vector<int64_t> compressed_token_map(const Tokenizer& tok, int64_t model_vocab_size);

}  // namespace memoe
