// 16-bit float formats stored in checkpoints. bfloat16 is the top half of an
// IEEE float32; float16 (IEEE half) has 5 exponent and 10 mantissa bits.
// Conversions work on bit patterns so they need no hardware support.
#pragma once
#include <bit>
#include <cmath>
#include <cstdint>

namespace memoe {

// float32 -> bfloat16, rounding to nearest with ties to even (as torch does).
// A NaN stays a NaN: truncation could clear every mantissa bit and turn it
// into an infinity, so the quiet bit is forced on.
inline uint16_t float_to_bf16(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x0040u);
  const uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

// The same result written without branches, so that loops calling it
// vectorise: round by adding 0x7fff plus the lowest kept bit, and for a NaN
// keep the top bits with the quiet bit forced on.
inline uint16_t float_to_bf16_vectorisable(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  const uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
  const uint32_t quiet_nan = (bits >> 16) | 0x0040u;
  return static_cast<uint16_t>((bits & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded);
}

// bfloat16 -> float32 is exact.
inline float bf16_to_float(uint16_t value) {
  return std::bit_cast<float>(static_cast<uint32_t>(value) << 16);
}

// IEEE half -> float32 is exact, including subnormals, infinities and NaNs.
inline float f16_to_float(uint16_t value) {
  const uint32_t sign = static_cast<uint32_t>(value >> 15) << 31;
  const uint32_t exponent = (value >> 10) & 0x1fu;
  const uint32_t mantissa = value & 0x3ffu;
  if (exponent == 0) {
    // Zero or subnormal: mantissa * 2^-24.
    const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    return sign ? -magnitude : magnitude;
  }
  if (exponent == 31) return std::bit_cast<float>(sign | 0x7f800000u | (mantissa << 13));
  return std::bit_cast<float>(sign | ((exponent - 15 + 127) << 23) | (mantissa << 13));
}

// float32 -> IEEE half, rounding to nearest with ties to even; values past
// the largest half (65504) become infinities, tiny ones subnormals or zero.
inline uint16_t float_to_f16(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t magnitude = bits & 0x7fffffffu;
  if (magnitude > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);  // NaN stays NaN
  if (magnitude >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds past 65504: infinity
  if (magnitude < 0x38800000u) {
    // Below the smallest normal half (2^-14): a subnormal, mantissa * 2^-24.
    const float scaled = std::bit_cast<float>(magnitude) * 16777216.0f;  // exact: times 2^24
    return static_cast<uint16_t>(sign | static_cast<uint16_t>(std::nearbyint(scaled)));
  }
  const uint32_t rounded = magnitude + 0xfffu + ((magnitude >> 13) & 1u);
  return static_cast<uint16_t>(sign | ((rounded - 0x38000000u) >> 13));
}

}  // namespace memoe
