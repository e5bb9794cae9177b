// Counter-based randomness: the value for (seed, counter) is a pure function,
// so a generator's whole state is one counter that checkpoints trivially and
// any position of the stream can be recomputed without replaying it.
#pragma once
#include <cstdint>

namespace memoe {

// splitmix64's finaliser: a bijection on 64 bits with good avalanche.
inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// The counter-th output of the splitmix64 stream keyed by (seed, domain).
// Hashing the key first keeps streams of nearby seeds from being shifted
// copies of each other; `domain` separates independent uses of one seed.
inline uint64_t counter_hash(uint64_t seed, uint64_t domain, uint64_t counter) {
  const uint64_t key = mix64(mix64(seed ^ 0x6A09E667F3BCC909ull) ^ domain);
  return mix64(key + (counter + 1) * 0x9E3779B97F4A7C15ull);
}

// Uniform integer in [0, n) from 64 random bits (multiply-shift: the bias is
// below n / 2^64, far under anything measurable).
inline uint64_t uniform_below(uint64_t random_bits, uint64_t n) {
  return uint64_t((static_cast<unsigned __int128>(random_bits) * n) >> 64);
}

// Uniform double in [0, 1) with 53 random bits.
inline double unit_interval(uint64_t random_bits) { return double(random_bits >> 11) * 0x1.0p-53; }

}  // namespace memoe
