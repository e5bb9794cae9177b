// A branch-free float32 exp for softmax arguments (never positive), so the
// loops that call it vectorise: std::exp does not without -ffast-math.
#pragma once
#include <algorithm>
#include <bit>
#include <cstdint>

namespace memoe {

// exp(min(x, 0)) in float32, within ~2 ulp; 0 below -87 (and for -inf);
// NaN stays NaN so a diverging run is not silently masked. Softmax
// arguments are never positive, so the clamp only drops rounding noise.
// Branch-free so loops over score rows vectorise (std::exp does not
// without -ffast-math).
inline float exp_nonpositive(float x) {
  const bool underflow = x < -87.0f;
  // Argument order makes std::max pick -87 for NaN, keeping xc finite.
  const float xc = std::min(0.0f, std::max(-87.0f, x));
  constexpr float kRoundMagic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float n = (xc * 1.44269504f + kRoundMagic) - kRoundMagic;
  // r = x - n ln2 with ln2 split in two so r stays exact to float precision.
  const float r = (xc - n * 0.693145752f) - n * 1.42860677e-6f;
  // Taylor to degree 7: |r| <= ln2/2 leaves a truncation error below 1e-8.
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  // 2^n built from its exponent bits; n >= -126 here so it stays normal.
  const float two_n = std::bit_cast<float>((static_cast<int32_t>(n) + 127) << 23);
  // x - x is 0 for finite x and NaN otherwise, so NaN propagates.
  return underflow ? 0.0f : p * two_n + (x - x);
}

}  // namespace memoe
