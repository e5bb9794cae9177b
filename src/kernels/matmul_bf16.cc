// bf16 matrix products: oneDNN matmul primitives and OpenBLAS sbgemm, and the
// fp32 <-> bf16 conversions. The only file that includes dnnl.hpp.
//
// Nothing here is decided at build time: oneDNN dispatches on the CPU it runs
// on (AMX, AVX512-BF16, or AVX-512 / AVX2 converting to fp32; capped by the
// ONEDNN_MAX_CPU_ISA environment variable), OpenBLAS's DYNAMIC_ARCH build
// picks its core at load time, and the conversions are compiled for several
// ISAs and chosen at load time (target_clones), so a build without
// -march=native (MEMOE_NATIVE=OFF) runs the same code paths.
#include <cblas.h>
#include <cpuid.h>
#include <dlfcn.h>
#include <omp.h>

#include <array>
#include <cstring>
#include <exception>
#include <map>
#include <mutex>
#include <vector>
#include <oneapi/dnnl/dnnl.hpp>

#include "core/bf16.h"
#include "core/error.h"
#include "kernels/few_rows.h"
#include "kernels/linear.h"
#include "kernels/matmul_bf16.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define MEMOE_ISA_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define MEMOE_ISA_CLONES
#endif

namespace memoe {

namespace {

uint32_t float_bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}

// A product's shape, transposes, leading dimensions and scalars. Every
// primitive is made for one thread (see SingleThreaded), so the thread
// count is no part of the key.
struct ShapeKey {
  int64_t m, n, k, lda, ldb, ldc;
  bool trans_a, trans_b;
  uint32_t alpha_bits, beta_bits;
  auto operator<=>(const ShapeKey&) const = default;
};

// oneDNN fixes a primitive's blocking and thread split when it is made, from
// omp_get_max_threads(): with several threads it may split K between them
// (seen for 64 x 64 x 4096 products and for gemm:jit), and the bits then
// depend on the thread count. Primitives are made while this thread's count
// is 1, so each runs on the thread that calls it; gemm_bf16 threads over
// fixed tiles of C itself.
class SingleThreaded {
 public:
  SingleThreaded() : saved_(omp_get_max_threads()) { omp_set_num_threads(1); }
  ~SingleThreaded() { omp_set_num_threads(saved_); }
  SingleThreaded(const SingleThreaded&) = delete;
  SingleThreaded& operator=(const SingleThreaded&) = delete;

 private:
  int saved_;
};

// oneDNN's CPU engine and the matmul primitives made on it. It lives as a
// function-local static in onednn() below, the kernel's own cache and the
// only state it keeps; a mutex guards it, so products may run from several
// threads. Primitives are immutable once made and oneDNN allows executing
// one from several threads at once. The engine is made in the constructor,
// so oneDNN's own statics outlive the cache at exit.
//
// Most products of a model repeat one shape every step, and get a primitive
// made for exactly that shape (oneDNN's fastest: brgemm, AMX where there is
// one). A routed expert's products see a different row count each step: m
// of its forward and dx products, k of its dW product. Making a primitive
// costs about 0.2 ms, a thousand of them a step for the small preset, so a
// family of shapes that differ only in m and k shares one primitive with m
// and k left to run time (oneDNN's gemm:jit; same speed as brgemm on
// AVX512-BF16, measured, though without AMX).
//
// Which of the two a product gets depends on its shape alone: exact when m
// and k are multiples of kExactMultiple (tokens per batch and hidden sizes,
// the shapes a model repeats), the family's otherwise. The two round
// differently (on AMX), so a choice that depended on the shapes seen before
// (as it once did: exact for a family's first two shapes) made a resumed
// run, or a rank of a data-parallel one, differ in the last bits from the
// run it continues or replaces. gemm_bf16 pads a tile's rows to a multiple
// of 16 where K is one, so K alone decides (onednn_tile below).
class OnednnCache {
 public:
  static constexpr size_t kMaxPrimitives = 512;  // a bound, should shapes keep coming
  static constexpr int64_t kExactMultiple = 16;

  OnednnCache() : engine_(dnnl::engine::kind::cpu, 0) {
    // oneDNN 2.6 has bf16 matmuls only from AVX-512 on (with or without
    // AVX512-BF16); below that (AVX2, or ONEDNN_MAX_CPU_ISA=AVX2) it creates
    // none, and products are converted to fp32 instead (see below).
    try {
      describe(ShapeKey{8, 8, 8, 8, 8, 8, false, false, 0, 0}, 1.0f, 0.0f);
      has_bf16_ = true;
    } catch (const dnnl::error&) {
      has_bf16_ = false;
    }
  }

  bool has_bf16() const { return has_bf16_; }

  const dnnl::engine& engine() const { return engine_; }

  // Row-major op(A) is m x k: element (i, p) at i*lda + p, or at p*lda + i
  // when A is stored transposed; the same for op(B) (k x n). m and k may be
  // DNNL_RUNTIME_DIM_VAL.
  static std::array<dnnl::memory::desc, 3> memory_descs(const ShapeKey& key) {
    using dt = dnnl::memory::data_type;
    using dims = dnnl::memory::dims;
    return {dnnl::memory::desc(dims{key.m, key.k}, dt::bf16, key.trans_a ? dims{1, key.lda} : dims{key.lda, 1}),
            dnnl::memory::desc(dims{key.k, key.n}, dt::bf16, key.trans_b ? dims{1, key.ldb} : dims{key.ldb, 1}),
            dnnl::memory::desc(dims{key.m, key.n}, dt::f32, dims{key.ldc, 1})};
  }

  dnnl::matmul::primitive_desc describe(const ShapeKey& key, float alpha, float beta) const {
    const SingleThreaded one_thread;
    const auto md = memory_descs(key);
    dnnl::primitive_attr attr;
    // Routed experts run their products on several threads at once, each
    // its own; oneDNN's library-owned scratchpad is shared between calls
    // (Debian builds it without DNNL_ENABLE_CONCURRENT_EXEC), which gave
    // wrong results at random, so each call brings its own.
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    if (alpha != 1.0f) attr.set_output_scales(0, {alpha});
    if (beta != 0.0f) {
      dnnl::post_ops ops;
      ops.append_sum(beta);
      attr.set_post_ops(ops);
    }
    return dnnl::matmul::primitive_desc(dnnl::matmul::desc(md[0], md[1], md[2]), attr, engine_);
  }

  struct Entry {
    dnnl::matmul::primitive_desc pd;
    dnnl::matmul matmul;
  };

  Entry get(const ShapeKey& key, float alpha, float beta) {
    ShapeKey make = key;
    if (key.m % kExactMultiple != 0 || key.k % kExactMultiple != 0) make.m = make.k = DNNL_RUNTIME_DIM_VAL;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = primitives_.find(make);
      if (it != primitives_.end()) return it->second;
    }
    // Made outside the lock (creation may take a millisecond); two threads
    // racing on a new shape both make it and one copy is kept.
    Entry made{describe(make, alpha, beta), {}};
    {
      const SingleThreaded one_thread;
      made.matmul = dnnl::matmul(made.pd);
    }
    std::lock_guard<std::mutex> lock(mutex_);
    if (primitives_.size() >= kMaxPrimitives) primitives_.clear();
    return primitives_.emplace(make, std::move(made)).first->second;
  }

  int64_t size() {
    std::lock_guard<std::mutex> lock(mutex_);
    return int64_t(primitives_.size());
  }

 private:
  dnnl::engine engine_;
  bool has_bf16_ = false;
  std::mutex mutex_;
  std::map<ShapeKey, Entry> primitives_;  // by exact shape, or by family (m = k = DNNL_RUNTIME_DIM_VAL)
};

OnednnCache& onednn() {
  static OnednnCache cache;
  return cache;
}

ShapeKey key_of(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, int64_t lda, int64_t ldb,
                float beta, int64_t ldc) {
  return ShapeKey{m, n, k, lda, ldb, ldc, trans_a, trans_b, float_bits(alpha), float_bits(beta)};
}

// rows x width bf16 at leading dimension ld, widened to fp32 (same layout).
std::vector<float> widened(const uint16_t* x, int64_t rows, int64_t width, int64_t ld) {
  std::vector<float> y(size_t(rows * ld));
  for (int64_t i = 0; i < rows; ++i) from_bf16(x + i * ld, width, y.data() + i * ld);
  return y;
}

// One oneDNN call on the calling thread: C[m, n] = alpha op(A) op(B) + beta C.
void onednn_call(const ShapeKey& key, float alpha, float beta, const uint16_t* a, const uint16_t* b, float* c) {
  OnednnCache& cache = onednn();
  const OnednnCache::Entry entry = cache.get(key, alpha, beta);
  // oneDNN takes non-const handles; it only reads src and weights.
  // The product's own shape (a family primitive leaves m and k to run time).
  const auto md = OnednnCache::memory_descs(key);
  const dnnl::memory a_mem(md[0], cache.engine(), const_cast<uint16_t*>(a));
  const dnnl::memory b_mem(md[1], cache.engine(), const_cast<uint16_t*>(b));
  const dnnl::memory c_mem(md[2], cache.engine(), c);
  thread_local std::vector<uint8_t> scratchpad;  // per thread: see set_scratchpad_mode above
  const dnnl::memory::desc pad_md = entry.pd.scratchpad_desc();
  if (scratchpad.size() < pad_md.get_size()) scratchpad.resize(pad_md.get_size());
  const dnnl::memory pad_mem(pad_md, cache.engine(), scratchpad.data());
  dnnl::stream stream(cache.engine());
  // gemm:jit primitives read the thread count again when they run: on the
  // calling thread alone here too (a product of one tile runs outside the
  // tile loop's parallel region).
  const SingleThreaded one_thread;
  entry.matmul.execute(stream, {{DNNL_ARG_SRC, a_mem},
                                {DNNL_ARG_WEIGHTS, b_mem},
                                {DNNL_ARG_DST, c_mem},
                                {DNNL_ARG_SCRATCHPAD, pad_mem}});
  stream.wait();
}

// C is cut into tiles of kTileRows x kTileCols by shape alone, each one
// single-threaded call over the whole K, threaded over the tiles: an
// element's sum then has one order whatever the thread count. A row's bits
// do not depend on how many rows the product has either (a rank holding
// fewer sequences, an evaluation batch of another size), as long as every
// tile runs the same kind of primitive: with K a multiple of 16 an exact
// one, whose rows are the same for any row count (checked for 16 to 4096;
// tests/kernels/matmul_bf16_test.cc), and a last tile of other than a
// multiple of 16 rows is padded with zero rows up to one, which also bounds
// the primitives a routed expert's varying row counts make to 16 a shape.
// With K not a multiple of 16 every tile runs the run-time-shaped primitive,
// whose rows do not depend on the row count either.
constexpr int64_t kTileRows = 256, kTileCols = 512;


// Rows [i0, i0 + rows) and columns [j0, j0 + cols) of C.
void onednn_tile(bool trans_a, bool trans_b, int64_t i0, int64_t rows, int64_t j0, int64_t cols, int64_t k,
                 float alpha, const uint16_t* a, int64_t lda, const uint16_t* b, int64_t ldb, float beta, float* c,
                 int64_t ldc) {
  const uint16_t* a_tile = trans_a ? a + i0 : a + i0 * lda;
  const uint16_t* b_tile = trans_b ? b + j0 * ldb : b + j0;
  float* c_tile = c + i0 * ldc + j0;
  const bool exact = k % OnednnCache::kExactMultiple == 0;
  // Only op(A) = A is padded: its rows are a product's tokens, whose count
  // varies. With A stored transposed (dW = dY^T X) the rows are a weight's
  // outputs, fixed by the model; padding them into a buffer of another
  // leading dimension changed their bits (k = 1040).
  constexpr int64_t kPad = OnednnCache::kExactMultiple;
  const int64_t padded = trans_a ? rows : (rows + kPad - 1) / kPad * kPad;
  if (!exact || padded == rows) {
    onednn_call(key_of(trans_a, trans_b, rows, cols, k, alpha, lda, ldb, beta, ldc), alpha, beta, a_tile, b_tile,
                c_tile);
    return;
  }
  // A's rows and C's, padded with zero rows of A (whose results are
  // dropped), at the product's own leading dimensions: the primitive is the
  // one a whole tile of `padded` rows gets.
  thread_local std::vector<uint16_t> a_pad;
  thread_local std::vector<float> c_pad;
  a_pad.resize(size_t((padded - 1) * lda + k));
  c_pad.resize(size_t((padded - 1) * ldc + cols));
  for (int64_t i = 0; i < padded; ++i) {
    if (i < rows) {
      std::memcpy(a_pad.data() + i * lda, a_tile + i * lda, size_t(k) * sizeof(uint16_t));
    } else {
      std::memset(a_pad.data() + i * lda, 0, size_t(k) * sizeof(uint16_t));
    }
  }
  if (beta != 0.0f)
    for (int64_t i = 0; i < rows; ++i)
      std::memcpy(c_pad.data() + i * ldc, c_tile + i * ldc, size_t(cols) * sizeof(float));
  onednn_call(key_of(false, trans_b, padded, cols, k, alpha, lda, ldb, beta, ldc), alpha, beta, a_pad.data(), b_tile,
              c_pad.data());
  for (int64_t i = 0; i < rows; ++i)
    std::memcpy(c_tile + i * ldc, c_pad.data() + i * ldc, size_t(cols) * sizeof(float));
}

void onednn_gemm_bf16(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const uint16_t* a,
                      int64_t lda, const uint16_t* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  OnednnCache& cache = onednn();
  if (!cache.has_bf16()) {
    // No bf16 primitives on this CPU: widen both inputs (exact) and run the
    // fp32 product; the results keep the same contract.
    const std::vector<float> a32 = widened(a, trans_a ? k : m, trans_a ? m : k, lda);
    const std::vector<float> b32 = widened(b, trans_b ? n : k, trans_b ? k : n, ldb);
    gemm(trans_a, trans_b, m, n, k, alpha, a32.data(), lda, b32.data(), ldb, beta, c, ldc);
    return;
  }
  const int64_t row_tiles = (m + kTileRows - 1) / kTileRows, col_tiles = (n + kTileCols - 1) / kTileCols;
  const int64_t tiles = row_tiles * col_tiles;
  // An error inside the parallel region is kept (the first) and raised after it.
  std::string error;
  std::exception_ptr other;
  auto tile = [&](int64_t t) {
    const int64_t i0 = t / col_tiles * kTileRows, j0 = t % col_tiles * kTileCols;
    try {
      onednn_tile(trans_a, trans_b, i0, std::min(kTileRows, m - i0), j0, std::min(kTileCols, n - j0), k, alpha, a,
                  lda, b, ldb, beta, c, ldc);
    } catch (const dnnl::error& e) {
#pragma omp critical(memoe_onednn_error)
      if (error.empty() && !other) error = e.what();
    } catch (...) {  // bad_alloc from a buffer
#pragma omp critical(memoe_onednn_error)
      if (error.empty() && !other) other = std::current_exception();
    }
  };
  // Small products stay on the calling thread (waking the others costs more).
  const bool threaded = tiles > 1 && double(m) * double(n) * double(k) > kThreadedMultiplyAdds && !omp_in_parallel();
  if (threaded) {
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t t = 0; t < tiles; ++t) tile(t);
  } else {
    for (int64_t t = 0; t < tiles; ++t) tile(t);
  }
  if (other) std::rethrow_exception(other);
  if (!error.empty()) fail("oneDNN bf16 matmul ", m, "x", n, "x", k, " failed: ", error);
}

// cblas_sbgemm, looked up at run time: cblas.h declares it, but OpenBLAS
// exports it only when built with BUILD_BFLOAT16, and Debian 12's
// libopenblas0-openmp (0.3.21) is not, so linking it directly would fail.
using SbgemmFn = void (*)(CBLAS_ORDER, CBLAS_TRANSPOSE, CBLAS_TRANSPOSE, blasint, blasint, blasint, float,
                          const bfloat16*, blasint, const bfloat16*, blasint, float, float*, blasint);

SbgemmFn sbgemm() {
  static const SbgemmFn fn = reinterpret_cast<SbgemmFn>(dlsym(RTLD_DEFAULT, "cblas_sbgemm"));
  return fn;
}

void check_shape(int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb, int64_t ldc) {
  constexpr int64_t kMax = 0x7fffffff;  // CBLAS and oneDNN's strides for BLAS take int
  MEMOE_CHECK(m >= 0 && n >= 0 && k >= 0 && m <= kMax && n <= kMax && k <= kMax && lda <= kMax && ldb <= kMax &&
                  ldc <= kMax,
              "bf16 matrix product of unsupported shape ", m, "x", n, "x", k);
}

}  // namespace

void gemm_bf16_with(Bf16Library library, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                    const uint16_t* a, int64_t lda, const uint16_t* b, int64_t ldb, float beta, float* c,
                    int64_t ldc) {
  check_shape(m, n, k, lda, ldb, ldc);
  if (m == 0 || n == 0) return;
  if (k == 0) {  // no products: C = beta * C (as BLAS; zero, not 0 * NaN, when beta is 0)
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
    return;
  }
  if (library == Bf16Library::onednn) {
    onednn_gemm_bf16(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  } else {
    const SbgemmFn fn = sbgemm();
    MEMOE_CHECK(fn, "this OpenBLAS has no cblas_sbgemm (built without BUILD_BFLOAT16)");
    fn(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, int(m),
       int(n), int(k), alpha, a, int(lda), b, int(ldb), beta, c, int(ldc));
  }
}

// The choice: oneDNN everywhere. bench/matmul_bench.cc on the 2-core AMD
// EPYC (Zen 4, AVX512-BF16), 2 threads, idle, 2026-12-01, GFLOP/s, best of 5:
//   product (small preset)   m x n x k       sgemm fp32  oneDNN bf16  sbgemm
//   LM head fwd        4096 x 8192 x  256 NT    186.5      336.7      n/a
//   LM head dx         4096 x  256 x 8192 NN    182.8      354.9      n/a
//   LM head dW         8192 x  256 x 4096 TN    170.3      374.7      n/a
//   FFN gate+up fwd    4096 x 1536 x  256 NT    182.1      357.9      n/a
//   FFN down dW         256 x  768 x 4096 TN    178.3      386.5      n/a
//   expert up fwd       512 x  256 x  256 NT    177.0      401.7      n/a
//   square 2048        2048 x 2048 x 2048 NN    204.0      382.2      n/a
// oneDNN ran brg:avx512_core_bf16 for every shape. sbgemm could not be
// measured: Debian 12's OpenBLAS (0.3.21, core Cooperlake here) does not
// export it (see sbgemm() above). Where an OpenBLAS that has it is loaded,
// the bench measures it beside oneDNN; revisit this function then.
Bf16Library bf16_library_for(bool, bool, int64_t, int64_t, int64_t) { return Bf16Library::onednn; }

// Products of at most kFewRows rows (decoding): oneDNN spends more on each
// call than these take (2-thread decode of the small preset: 129 tokens/s
// through it against 293 in fp32), so they run kernels/few_rows.h's loop.

void gemm_bf16(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const uint16_t* a,
               int64_t lda, const uint16_t* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (!trans_a && trans_b && alpha == 1.0f && m > 0 && m <= kFewRows && k > 0 && n > 0) {
    check_shape(m, n, k, lda, ldb, ldc);
    std::vector<float> a32(size_t(m * k));
    for (int64_t r = 0; r < m; ++r) from_bf16(a + r * lda, k, a32.data() + r * k);
    few_rows_product(m, n, k, a32.data(), k, b, ldb, beta, c, ldc);
    return;
  }
  gemm_bf16_with(bf16_library_for(trans_a, trans_b, m, n, k), trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta,
                 c, ldc);
}

// float_to_bf16_vectorisable (core/bf16.h), compiled for several ISAs.
MEMOE_ISA_CLONES void to_bf16(const float* x, int64_t n, uint16_t* y) {
  for (int64_t i = 0; i < n; ++i) y[i] = float_to_bf16_vectorisable(x[i]);
}

MEMOE_ISA_CLONES void from_bf16(const uint16_t* x, int64_t n, float* y) {
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t bits = uint32_t(x[i]) << 16;
    std::memcpy(y + i, &bits, sizeof bits);
  }
}

std::string onednn_isa_name() {
  switch (dnnl::get_effective_cpu_isa()) {
    case dnnl::cpu_isa::sse41: return "sse41";
    case dnnl::cpu_isa::avx: return "avx";
    case dnnl::cpu_isa::avx2: return "avx2";
    case dnnl::cpu_isa::avx512_mic: return "avx512_mic";
    case dnnl::cpu_isa::avx512_mic_4ops: return "avx512_mic_4ops";
    case dnnl::cpu_isa::avx512_core: return "avx512_core";
    case dnnl::cpu_isa::avx512_core_vnni: return "avx512_core_vnni";
    case dnnl::cpu_isa::avx512_core_bf16: return "avx512_core_bf16";
    case dnnl::cpu_isa::avx512_core_amx: return "avx512_core_amx";
    case dnnl::cpu_isa::avx2_vnni: return "avx2_vnni";
    default: return "isa " + std::to_string(int(dnnl::get_effective_cpu_isa()));
  }
}

std::string onednn_impl_name(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k) {
  if (!onednn().has_bf16()) return "fp32 gemm after widening (no oneDNN bf16 matmul below AVX-512)";
  const int64_t lda = trans_a ? m : k, ldb = trans_b ? k : n;
  return onednn().describe(key_of(trans_a, trans_b, m, n, k, 1.0f, lda, ldb, 0.0f, n), 1.0f, 0.0f).impl_info_str();
}

bool openblas_has_sbgemm() { return sbgemm() != nullptr; }

std::string openblas_core_name() { return openblas_get_corename(); }

std::string onednn_version() {
  const dnnl_version_t* v = dnnl_version();
  return std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch);
}

int64_t onednn_cached_primitives() { return onednn().size(); }

bool bf16_native() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  const bool avx512_bf16 = __get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx) && (eax & (1u << 5));
  const bool amx_bf16 = __get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) && (edx & (1u << 22));
  // oneDNN also checks that the OS saves the AVX-512 / AMX state, and
  // ONEDNN_MAX_CPU_ISA may cap it below the CPU.
  const dnnl::cpu_isa isa = dnnl::get_effective_cpu_isa();
  const bool dispatched = isa == dnnl::cpu_isa::avx512_core_bf16 || isa == dnnl::cpu_isa::avx512_core_amx;
  return (avx512_bf16 || amx_bf16) && dispatched;
}

std::string bf16_description() {
  return "oneDNN " + onednn_version() + " " + onednn_isa_name() + (bf16_native()            ? ""
                                                              : onednn().has_bf16() ? " (bf16 emulated)"
                                                                                    : " (bf16 widened to fp32 sgemm)");
}

}  // namespace memoe
