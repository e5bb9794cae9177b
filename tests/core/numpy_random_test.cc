// Expected values come from /usr/bin/python3 with numpy 1.24.2, e.g.
//   np.random.default_rng(0).integers(0, 10, size=8, dtype=np.int64)
#include "core/numpy_random.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "core/error.h"

namespace memoe {
namespace {

using I64 = std::vector<int64_t>;

TEST(NumpyRandom, SeedSequenceStateMatchesNumpy) {
  // np.random.SeedSequence(0).generate_state(8, np.uint32)
  EXPECT_EQ(seed_sequence_generate_state(0, 8),
            (std::vector<uint32_t>{2968811710u, 3677149159u, 745650761u, 2884920346u, 2642120001u, 549907821u,
                                   574372308u, 742431198u}));
  // A seed above 2^32 enters the pool as two 32-bit words.
  EXPECT_EQ(seed_sequence_generate_state((uint64_t{1} << 40) + 3, 5),
            (std::vector<uint32_t>{2789635316u, 1410910647u, 811316306u, 1804054328u, 1649660561u}));
}

TEST(NumpyRandom, RawOutputMatchesPcg64) {
  // np.random.PCG64(0).random_raw(3)
  NumpyRng rng(0);
  EXPECT_EQ(rng.next_uint64(), 11749869230777074271ull);
  EXPECT_EQ(rng.next_uint64(), 4976686463289251617ull);
  EXPECT_EQ(rng.next_uint64(), 755828109848996024ull);
  NumpyRng other(12345);
  EXPECT_EQ(other.next_uint64(), 4193609425186963869ull);
  EXPECT_EQ(other.next_uint64(), 5843160025838961886ull);
}

TEST(NumpyRandom, Next32UsesLowThenHighHalf) {
  NumpyRng a(0), b(0);
  const uint64_t raw = a.next_uint64();
  EXPECT_EQ(b.next_uint32(), static_cast<uint32_t>(raw));
  EXPECT_EQ(b.next_uint32(), static_cast<uint32_t>(raw >> 32));
  EXPECT_EQ(b.next_uint64(), a.next_uint64());
}

TEST(NumpyRandom, SmallRangesUse32BitPath) {
  EXPECT_EQ(NumpyRng(0).integers(0, 10, 8), (I64{8, 6, 5, 2, 3, 0, 0, 0}));
  EXPECT_EQ(NumpyRng(42).integers(-5, (int64_t{1} << 32) - 5, 4), (I64{383329923, 3324115912, 2811363260, 1884968540}));
  // Range 2^31 + 1 rejects about half of all draws.
  EXPECT_EQ(NumpyRng(3).integers(0, (int64_t{1} << 31) + 1, 6),
            (I64{1742692732, 183930185, 385346042, 508546690, 1866662802, 713397379}));
}

TEST(NumpyRandom, LargeRangesUse64BitLemire) {
  const int64_t two62 = int64_t{1} << 62, two61 = int64_t{1} << 61;
  EXPECT_EQ(NumpyRng((uint64_t{1} << 40) + 3).integers(-two62, two61, 4),
            (I64{740102407465349808, 2277186316505474360, -3258258391914823379, -698124251514234318}));
  // 2^63 - 2^61 + 1: a range where 64-bit rejection is frequent.
  EXPECT_EQ(NumpyRng(3).integers(0, two62 + two61 + 1, 6),
            (I64{651137615030404517, 1104998578845871980, 5081458767915139891, 786329497436903519,
                 2706332364185237243, 3574565213031837689}));
  EXPECT_EQ(NumpyRng(7).integers(INT64_MIN, INT64_MAX, 3),
            (I64{2307604057237572234, 7327301329031162516, 5085503372737050977}));
  // The Engram multiplier draw for seed 0, layer 1, V' = 1000 (spec §5.2: m = 2v + 1).
  EXPECT_EQ(NumpyRng(10007).integers(0, 4611686018427387, 3), (I64{3796813830707315, 239796500919311, 1781657924734481}));
}

TEST(NumpyRandom, BufferedHalfCarriesAcrossCalls) {
  // g = default_rng(99); g.integers(0,1000,3); g.integers(0,1000,2);
  // g.integers(0,2**40,1); g.integers(0,1000,2)
  NumpyRng rng(99);
  EXPECT_EQ(rng.integers(0, 1000, 3), (I64{958, 506, 757}));
  EXPECT_EQ(rng.integers(0, 1000, 2), (I64{565, 177}));
  EXPECT_EQ(rng.integers(0, int64_t{1} << 40, 1), (I64{1068930220529}));
  EXPECT_EQ(rng.integers(0, 1000, 2), (I64{511, 965}));
}

TEST(NumpyRandom, SingleValueRangeDrawsNothing) {
  NumpyRng rng(5);
  EXPECT_EQ(rng.integers(3, 4, 3), (I64{3, 3, 3}));
  EXPECT_EQ(rng.integers(0, 10, 2), (I64{6, 8}));  // same as a fresh default_rng(5)
}

TEST(NumpyRandom, RejectsEmptyRange) {
  NumpyRng rng(0);
  EXPECT_THROW(rng.integers(5, 5, 1), Error);
  EXPECT_THROW(rng.integers(6, 5, 1), Error);
  EXPECT_TRUE(rng.integers(0, 10, 0).empty());
}

}  // namespace
}  // namespace memoe
