// NumpyRng: bit-exact reimplementation of numpy 1.24's
// `np.random.default_rng(seed).integers(low, high, size=n, dtype=np.int64)`.
// Engram hash multipliers must equal the ones DeepSeek's reference code draws
// with numpy, because released checkpoints do not store the row ids they imply.
//
// Pipeline, as numpy does it:
//   seed -> SeedSequence (32-bit entropy pool of 4 words, hash-mixed)
//        -> generate_state(4 x uint64) -> PCG64 (128-bit LCG, XSL-RR output)
//        -> bounded integers (Lemire's multiply-and-reject; a 32-bit path that
//           consumes half of a 64-bit draw at a time when the range fits).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace memoe {

// numpy's SeedSequence(seed).generate_state(n_words, np.uint32) for an integer
// seed with no spawn key. Exposed so tests can check the seeding stage alone.
std::vector<uint32_t> seed_sequence_generate_state(uint64_t seed, size_t n_words);

class NumpyRng {
 public:
  // As np.random.default_rng(seed) (equivalently PCG64(SeedSequence(seed))).
  explicit NumpyRng(uint64_t seed);

  // One raw PCG64 output (numpy: bit_generator.random_raw()).
  uint64_t next_uint64();
  // numpy's next_uint32 for PCG64: the low half of a fresh 64-bit draw, then
  // the buffered high half on the following call.
  uint32_t next_uint32();

  // As Generator.integers(low, high, size=n, dtype=np.int64): uniform on
  // [low, high). Throws memoe::Error if low >= high.
  std::vector<int64_t> integers(int64_t low, int64_t high, size_t n);

 private:
  __extension__ typedef unsigned __int128 u128;

  uint64_t bounded_lemire_uint64(uint64_t range_incl);
  uint32_t bounded_lemire_uint32(uint32_t range_incl);

  u128 state_ = 0;
  u128 increment_ = 0;
  // The 32-bit buffer lives in the generator, as in numpy, so that it carries
  // over between integers() calls on the same object.
  bool has_uint32_ = false;
  uint32_t buffered_uint32_ = 0;
};

}  // namespace memoe
