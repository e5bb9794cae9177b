// A small built-in 5x7 bitmap font (ASCII letters, digits and the
// punctuation charts need), so images carry text without a font library.
#pragma once
#include <cstdint>
#include <string>

namespace memoe::font {

constexpr int kGlyphWidth = 5;   // pixels per glyph row
constexpr int kCapHeight = 7;    // rows 0..6 sit on the baseline below row 6
constexpr int kGlyphRows = 9;    // rows 7..8 hold descenders (g, j, p, q, y, ',')
constexpr int kAdvance = 6;      // glyph width plus one column of spacing

// The 9 rows of character c, top first; bit 4 is the leftmost pixel.
// Characters without a glyph get the '?' glyph.
const uint8_t* glyph_rows(char c);

// One byte per character to draw: ASCII stays, each non-ASCII UTF-8
// sequence becomes a single '?'.
std::string to_glyph_text(const std::string& utf8);

// Width in pixels of text drawn at `scale` (no trailing spacing column).
int text_width(const std::string& utf8, int scale);

}  // namespace memoe::font
