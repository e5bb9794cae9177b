#include "kernels/linear.h"

#include <cblas.h>

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "kernels/few_rows.h"

namespace memoe {

namespace {
// Products are cut into fixed blocks of C's rows or columns, and each block
// is one single-threaded BLAS call, so every element's sum is computed the
// same way for any thread count and any BLAS kernels. OpenBLAS's own
// threading does not promise that: its threaded driver cuts K differently
// from its single-threaded one, and its AVX2 (Haswell) kernels compute the
// edge tiles of a thread's share in another order, so 1 and 2 threads gave
// different bits even at K = 64 (ThreadCount.BlasProductsAreBitwiseTheSame).
// Products of more than kThreadedMultiplyAdds (linear.h) run their blocks
// on the thread team; smaller ones run on the calling thread alone (a 1-row
// product of 768 x 768 on 2 threads). OpenBLAS (the OpenMP build) runs single-threaded
// inside an active parallel region and when omp_get_max_threads() is 1,
// which the serial path arranges for its call.
constexpr int64_t kBlock = 256;

// Runs fn with omp_get_max_threads() == 1 on this thread (a per-task
// setting, so other threads are untouched).
template <class Fn>
void on_this_thread_only(Fn fn) {
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  fn();
  omp_set_num_threads(threads);
}
}  // namespace


void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
          const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (!trans_a && trans_b && alpha == 1.0f && m <= kFewRows && k > 0) {
    // BLAS packs B for such products and reached 43 % of the memory-bandwidth
    // limit in fp32 decode of moe-medium; this streams B once.
    few_rows_product(m, n, k, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  // Split the longer side of C, so that each block still repacks little.
  const bool by_rows = m >= n;
  const int64_t side = by_rows ? m : n, blocks = (side + kBlock - 1) / kBlock;
  const CBLAS_TRANSPOSE ta = trans_a ? CblasTrans : CblasNoTrans, tb = trans_b ? CblasTrans : CblasNoTrans;
  auto block = [&](int64_t blk) {
    const int64_t first = blk * kBlock, count = std::min(kBlock, side - first);
    if (by_rows) {
      // Rows first.. of op(A) and of C.
      const float* a0 = trans_a ? a + first : a + first * lda;
      cblas_sgemm(CblasRowMajor, ta, tb, int(count), int(n), int(k), alpha, a0, int(lda), b, int(ldb), beta,
                  c + first * ldc, int(ldc));
    } else {
      // Columns first.. of op(B) and of C.
      const float* b0 = trans_b ? b + first * ldb : b + first;
      cblas_sgemm(CblasRowMajor, ta, tb, int(m), int(count), int(k), alpha, a, int(lda), b0, int(ldb), beta,
                  c + first, int(ldc));
    }
  };
  if (double(m) * double(n) * double(k) > kThreadedMultiplyAdds && !omp_in_parallel()) {
#pragma omp parallel for schedule(static)
    for (int64_t blk = 0; blk < blocks; ++blk) block(blk);
  } else {
    on_this_thread_only([&] {
      for (int64_t blk = 0; blk < blocks; ++blk) block(blk);
    });
  }
}

const char* precision_name(Precision p) { return p == Precision::bf16 ? "bf16" : "fp32"; }

Precision parse_precision(const std::string& name) {
  if (name == "fp32") return Precision::fp32;
  if (name == "bf16") return Precision::bf16;
  fail("unknown precision '", name, "' (expected fp32 or bf16)");
}

Precision default_precision() { return bf16_native() ? Precision::bf16 : Precision::fp32; }

std::string precision_line(Precision p) {
  if (p == Precision::bf16) return "precision: bf16 matrix products on " + bf16_description();
  return std::string("precision: fp32 (sgemm)") + (bf16_native() ? "" : "; this CPU has no native bf16 path");
}

namespace {
// Activations rounded to bf16 on their way into a product. Scratch reused
// from call to call (per thread, as products may run on several), never
// read before it is written.
uint16_t* bf16_scratch(int slot, const float* x, int64_t count) {
  thread_local std::vector<uint16_t> scratch[2];
  std::vector<uint16_t>& s = scratch[slot];
  if (s.size() < size_t(count)) s.resize(size_t(count));
  to_bf16(x, count, s.data());
  return s.data();
}
}  // namespace

namespace {
// The profile's counters (see ProductProfile): global because the products
// run deep inside the layers; atomics because experts run them in parallel.
std::atomic<bool> profiling{false};
std::atomic<double> profiled_flops{0}, profiled_seconds{0};

void add_to(std::atomic<double>& total, double x) {
  double old = total.load(std::memory_order_relaxed);
  while (!total.compare_exchange_weak(old, old + x, std::memory_order_relaxed)) {
  }
}

// Times its scope into the profile when profiling is on.
class ProfiledProducts {
 public:
  explicit ProfiledProducts(double flops) : flops_(flops), on_(profiling.load(std::memory_order_relaxed)) {
    if (on_) start_ = std::chrono::steady_clock::now();
  }
  ~ProfiledProducts() {
    if (!on_) return;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    add_to(profiled_flops, flops_);
    add_to(profiled_seconds, s / double(omp_get_num_threads()));
  }

 private:
  double flops_;
  bool on_;
  std::chrono::steady_clock::time_point start_;
};
}  // namespace

void set_product_profiling(bool on) {
  profiled_flops = 0;
  profiled_seconds = 0;
  profiling = on;
}

ProductProfile product_profile() { return {profiled_flops.load(), profiled_seconds.load()}; }

namespace {
// x as a bf16 operand: as stored, or rounded into scratch `slot`.
const uint16_t* bf16_operand(ActivationMatrix x, int slot, int64_t count) {
  return x.bf16 ? x.bf16 : bf16_scratch(slot, x.f32, count);
}

void check_operands(ActivationMatrix x, WeightMatrix w) {
  MEMOE_CHECK(!x.bf16 || w.bf16, "linear: an input stored in bf16 needs a weight with a bf16 copy");
}
}  // namespace

void linear_forward(ActivationMatrix x, WeightMatrix w, const float* bias, int64_t n, int64_t in, int64_t out,
                    float* y) {
  check_operands(x, w);
  const ProfiledProducts profile(2.0 * double(n) * double(in) * double(out));
  if (bias) {
    for (int64_t i = 0; i < n; ++i) std::memcpy(y + i * out, bias, sizeof(float) * size_t(out));
  }
  const float beta = bias ? 1.0f : 0.0f;
  if (w.bf16) {
    gemm_bf16(false, true, n, out, in, 1.0f, bf16_operand(x, 0, n * in), in, w.bf16, in, beta, y, out);
  } else {
    gemm(false, true, n, out, in, 1.0f, x.f32, in, w.f32, in, beta, y, out);
  }
}

void linear_backward(ActivationMatrix dy, ActivationMatrix x, WeightMatrix w, int64_t n, int64_t in, int64_t out,
                     float* dx, float* dw, float* dbias) {
  if (n == 0) return;
  check_operands(x, w);
  check_operands(dy, w);
  MEMOE_CHECK(!dy.bf16 || !dbias, "linear: a bias gradient needs the output gradient in fp32");
  const ProfiledProducts profile(2.0 * double(n) * double(in) * double(out) * double((dx ? 1 : 0) + (dw ? 1 : 0)));
  if (w.bf16) {
    const uint16_t* dy16 = bf16_operand(dy, 0, n * out);
    if (dx) gemm_bf16(false, false, n, in, out, 1.0f, dy16, out, w.bf16, in, 1.0f, dx, in);
    if (dw) gemm_bf16(true, false, out, in, n, 1.0f, dy16, out, bf16_operand(x, 1, n * in), in, 1.0f, dw, in);
  } else {
    if (dx) gemm(false, false, n, in, out, 1.0f, dy.f32, out, w.f32, in, 1.0f, dx, in);
    if (dw) gemm(true, false, out, in, n, 1.0f, dy.f32, out, x.f32, in, 1.0f, dw, in);
  }
  if (dbias) {
    for (int64_t i = 0; i < n; ++i)
      for (int64_t o = 0; o < out; ++o) dbias[o] += dy.f32[i * out + o];
  }
}

std::vector<std::pair<std::string, std::string>> kernel_environment_defaults() {
  std::vector<std::pair<std::string, std::string>> env = {{"OMP_WAIT_POLICY", "PASSIVE"}};
  const std::string core = openblas_get_corename();
  const bool avx512_core = core == "SkylakeX" || core == "Cooperlake" || core == "SapphireRapids";
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
                      __builtin_cpu_supports("avx512cd");
  if (avx512 && !avx512_core)
    env.emplace_back("OPENBLAS_CORETYPE", __builtin_cpu_supports("avx512bf16") ? "Cooperlake" : "SkylakeX");
  return env;
}

namespace {
template <class Product>
double best_gflops(int64_t n, int rounds, Product product) {
  double best = 0;
  for (int r = 0; r < rounds; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    product();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, 2.0 * double(n) * double(n) * double(n) / s / 1e9);
  }
  return best;
}
}  // namespace

double measure_sgemm_gflops(int64_t n, int rounds) {
  std::vector<float> a(size_t(n * n), 1.0f), b(size_t(n * n), 0.5f), c(size_t(n * n));
  return best_gflops(n, rounds, [&] { gemm(false, false, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n); });
}

double measure_gemm_bf16_gflops(int64_t n, int rounds) {
  std::vector<uint16_t> a(size_t(n * n), 0x3f80), b(size_t(n * n), 0x3f00);  // 1.0 and 0.5
  std::vector<float> c(size_t(n * n));
  gemm_bf16(false, false, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);  // makes the primitive
  return best_gflops(n, rounds,
                     [&] { gemm_bf16(false, false, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n); });
}

}  // namespace memoe
