#include "core/numpy_random.h"

#include <limits>

#include "core/error.h"

namespace memoe {
namespace {

// SeedSequence constants (numpy/random/bit_generator.pyx; from M. O'Neill's
// seed_seq_fe design).
constexpr uint32_t kInitA = 0x43b0d7e5u;
constexpr uint32_t kMultA = 0x931e8875u;
constexpr uint32_t kInitB = 0x8b51f9ddu;
constexpr uint32_t kMultB = 0x58f38dedu;
constexpr uint32_t kMixMultL = 0xca01f9ddu;
constexpr uint32_t kMixMultR = 0x4973f715u;
constexpr int kXShift = 16;
constexpr size_t kPoolSize = 4;

uint32_t hashmix(uint32_t value, uint32_t& hash_const) {
  value ^= hash_const;
  hash_const *= kMultA;
  value *= hash_const;
  value ^= value >> kXShift;
  return value;
}

uint32_t mix(uint32_t x, uint32_t y) {
  uint32_t result = kMixMultL * x - kMixMultR * y;
  result ^= result >> kXShift;
  return result;
}

// numpy turns a non-negative Python int into little-endian 32-bit words;
// zero becomes one zero word.
std::vector<uint32_t> seed_words(uint64_t seed) {
  std::vector<uint32_t> words;
  do {
    words.push_back(static_cast<uint32_t>(seed));
    seed >>= 32;
  } while (seed != 0);
  return words;
}

std::vector<uint32_t> mixed_pool(uint64_t seed) {
  const std::vector<uint32_t> entropy = seed_words(seed);
  std::vector<uint32_t> pool(kPoolSize);
  uint32_t hash_const = kInitA;
  for (size_t i = 0; i < kPoolSize; ++i)
    pool[i] = hashmix(i < entropy.size() ? entropy[i] : 0u, hash_const);
  for (size_t src = 0; src < kPoolSize; ++src)
    for (size_t dst = 0; dst < kPoolSize; ++dst)
      if (src != dst) pool[dst] = mix(pool[dst], hashmix(pool[src], hash_const));
  // Entropy beyond the pool (never more than 2 words for a uint64 seed, so
  // this loop is empty; kept for fidelity to the algorithm).
  for (size_t src = kPoolSize; src < entropy.size(); ++src)
    for (size_t dst = 0; dst < kPoolSize; ++dst)
      pool[dst] = mix(pool[dst], hashmix(entropy[src], hash_const));
  return pool;
}

}  // namespace

std::vector<uint32_t> seed_sequence_generate_state(uint64_t seed, size_t n_words) {
  const std::vector<uint32_t> pool = mixed_pool(seed);
  std::vector<uint32_t> state(n_words);
  uint32_t hash_const = kInitB;
  for (size_t i = 0; i < n_words; ++i) {
    uint32_t value = pool[i % kPoolSize];
    value ^= hash_const;
    hash_const *= kMultB;
    value *= hash_const;
    value ^= value >> kXShift;
    state[i] = value;
  }
  return state;
}

NumpyRng::NumpyRng(uint64_t seed) {
  // generate_state(4, np.uint64) is the uint32 stream viewed as little-endian
  // uint64 pairs; words 0,1 form initstate and words 2,3 the stream selector.
  const std::vector<uint32_t> w = seed_sequence_generate_state(seed, 8);
  uint64_t s[4];
  for (int i = 0; i < 4; ++i) s[i] = static_cast<uint64_t>(w[2 * i]) | (static_cast<uint64_t>(w[2 * i + 1]) << 32);
  const u128 init_state = (static_cast<u128>(s[0]) << 64) | s[1];
  const u128 init_seq = (static_cast<u128>(s[2]) << 64) | s[3];
  // pcg_setseq_128_srandom_r.
  state_ = 0;
  increment_ = (init_seq << 1) | 1u;
  next_uint64();
  state_ += init_state;
  next_uint64();
}

uint64_t NumpyRng::next_uint64() {
  // PCG's default 128-bit multiplier.
  constexpr u128 kMultiplier = (static_cast<u128>(0x2360ED051FC65DA4ull) << 64) | 0x4385DF649FCCF645ull;
  state_ = state_ * kMultiplier + increment_;
  // XSL-RR: xor the halves, rotate right by the top 6 bits.
  const uint64_t folded = static_cast<uint64_t>(state_ >> 64) ^ static_cast<uint64_t>(state_);
  const unsigned rot = static_cast<unsigned>(state_ >> 122);
  return (folded >> rot) | (folded << ((64u - rot) & 63u));
}

uint32_t NumpyRng::next_uint32() {
  if (has_uint32_) {
    has_uint32_ = false;
    return buffered_uint32_;
  }
  const uint64_t draw = next_uint64();
  has_uint32_ = true;
  buffered_uint32_ = static_cast<uint32_t>(draw >> 32);
  return static_cast<uint32_t>(draw);
}

// Lemire's nearly-divisionless method: the high word of draw * range is the
// result; reject when the low word falls in the biased sliver.
uint64_t NumpyRng::bounded_lemire_uint64(uint64_t range_incl) {
  const uint64_t range_excl = range_incl + 1;
  u128 m = static_cast<u128>(next_uint64()) * range_excl;
  uint64_t leftover = static_cast<uint64_t>(m);
  if (leftover < range_excl) {
    const uint64_t threshold = (std::numeric_limits<uint64_t>::max() - range_incl) % range_excl;
    while (leftover < threshold) {
      m = static_cast<u128>(next_uint64()) * range_excl;
      leftover = static_cast<uint64_t>(m);
    }
  }
  return static_cast<uint64_t>(m >> 64);
}

uint32_t NumpyRng::bounded_lemire_uint32(uint32_t range_incl) {
  const uint32_t range_excl = range_incl + 1;
  uint64_t m = static_cast<uint64_t>(next_uint32()) * range_excl;
  uint32_t leftover = static_cast<uint32_t>(m);
  if (leftover < range_excl) {
    const uint32_t threshold = (std::numeric_limits<uint32_t>::max() - range_incl) % range_excl;
    while (leftover < threshold) {
      m = static_cast<uint64_t>(next_uint32()) * range_excl;
      leftover = static_cast<uint32_t>(m);
    }
  }
  return static_cast<uint32_t>(m >> 32);
}

std::vector<int64_t> NumpyRng::integers(int64_t low, int64_t high, size_t n) {
  MEMOE_CHECK(low < high, "integers: low >= high (low ", low, ", high ", high, ")");
  // numpy works with the inclusive range high - 1 - low, in unsigned arithmetic
  // so that the full int64 span does not overflow.
  const uint64_t range = static_cast<uint64_t>(high) - 1u - static_cast<uint64_t>(low);
  const uint64_t offset = static_cast<uint64_t>(low);
  std::vector<int64_t> out(n);
  for (size_t i = 0; i < n; ++i) {
    uint64_t v;
    if (range == 0) {
      v = 0;  // numpy draws nothing for a one-value range
    } else if (range <= 0xFFFFFFFFull) {
      v = range == 0xFFFFFFFFull ? next_uint32() : bounded_lemire_uint32(static_cast<uint32_t>(range));
    } else if (range == std::numeric_limits<uint64_t>::max()) {
      v = next_uint64();  // unreachable for int64 bounds; kept as numpy has it
    } else {
      v = bounded_lemire_uint64(range);
    }
    out[i] = static_cast<int64_t>(offset + v);
  }
  return out;
}

}  // namespace memoe
