// Strict UTF-8 helpers shared by the tokenizer, its corpus reader and the
// token-map normalisation.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace memoe {

// Byte offset of the first sequence that is not strict UTF-8 (overlongs,
// surrogates and code points past U+10FFFF count as invalid), or npos.
size_t find_invalid_utf8(std::string_view text);

// Code points of valid UTF-8; invalid input is a memoe::Error naming
// `what` and the byte offset.
std::vector<int32_t> utf8_to_code_points(std::string_view text, std::string_view what);

// Appends the UTF-8 encoding of one valid code point.
void append_utf8(std::string& out, int32_t code_point);

// U+FFFD REPLACEMENT CHARACTER, what undecodable bytes turn into.
inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";

}  // namespace memoe
