// Linear layers over row-major activations: y[n, out] = x[n, in] @ W[out, in]^T + b.
// All matrix products of the engine go through here. In fp32 they run on
// CBLAS sgemm and give bitwise the same results for any thread count (see
// kBlock in linear.cc); a weight with a bf16 copy makes its products
// mixed precision (gemm_bf16 below).
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "kernels/weight_matrix.h"

namespace memoe {

// The precision of a model's large matrix products. fp32 is exact and
// reproducible; bf16 is mixed precision: bf16 operands (the weights' bf16
// copies and the activations rounded on the way in), fp32 accumulation and
// results, everything else fp32.
enum class Precision { fp32, bf16 };
const char* precision_name(Precision p);
// "fp32" or "bf16"; anything else is one line naming the value.
Precision parse_precision(const std::string& name);
// bf16 where gemm_bf16 has native bf16 instructions (bf16_native()), fp32 elsewhere.
Precision default_precision();
// One line for a command's first lines, e.g. "precision: bf16 matrix
// products on oneDNN 2.6.3 avx512_core_bf16".
std::string precision_line(Precision p);

// A layer's input (or output gradient) as the products read it: fp32
// values, rounded to bf16 on the way into a bf16 product, or values a layer
// already stored as bf16 (which only a bf16 product, a weight with a bf16
// copy, can read).
struct ActivationMatrix {
  ActivationMatrix(const float* values) : f32(values) {}
  explicit ActivationMatrix(const uint16_t* rounded) : bf16(rounded) {}
  const float* f32 = nullptr;
  const uint16_t* bf16 = nullptr;
};

// y = x @ W^T (+ bias when not null). Overwrites y. With W's bf16 copy, x is
// rounded to bf16 for the product and y accumulated in fp32.
void linear_forward(ActivationMatrix x, WeightMatrix w, const float* bias, int64_t n, int64_t in, int64_t out,
                    float* y);

// Adds the gradients: dx += dy @ W, dW += dy^T @ x, dbias += sum_n dy.
// Any of dx, dw, dbias may be null to skip it. With W's bf16 copy, dy and x
// are rounded to bf16 for the two products; dW and dx stay fp32. A dy
// stored in bf16 takes no dbias.
void linear_backward(ActivationMatrix dy, ActivationMatrix x, WeightMatrix w, int64_t n, int64_t in, int64_t out,
                     float* dx, float* dw, float* dbias);

// Products of more multiply-adds than this run their fixed blocks on the
// thread team; smaller ones on the calling thread alone, because waking a
// sleeping team costs more than they take (gemm and gemm_bf16 alike).
inline constexpr double kThreadedMultiplyAdds = double(1 << 22);

// General C[m, n] = alpha * op(A) @ op(B) + beta * C with leading dimensions, row-major.
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
          const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

// bf16 products: C[m, n] = alpha * op(A) @ op(B) + beta * C as gemm above,
// with A and B in bfloat16 (raw bit patterns, as core/bf16.h and to_bf16
// make them) and the products accumulated and written in fp32. Runs oneDNN's
// matmul or OpenBLAS's sbgemm, whichever kernels/matmul_bf16.cc measured
// faster for the shape; each uses the CPU's native bf16 instructions where it
// has them (decided at run time, never at build time) and converts to fp32
// otherwise. Unlike gemm, results are not promised bitwise across thread
// counts: oneDNN does not document it, though
// MatmulBf16.ThreadCountDoesNotChangeTheBits holds for a deep and a wide
// product on the machine at hand.
void gemm_bf16(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const uint16_t* a,
               int64_t lda, const uint16_t* b, int64_t ldb, float beta, float* c, int64_t ldc);

// fp32 -> bf16 rounding to nearest even, bit for bit as float_to_bf16 in
// core/bf16.h (NaN stays NaN, subnormals round, never flushed); and the exact
// way back. Vectorised, for whatever CPU runs it.
void to_bf16(const float* x, int64_t n, uint16_t* y);
void from_bf16(const uint16_t* x, int64_t n, float* y);

// Whether gemm_bf16 runs on native bf16 instructions here (AVX512-BF16 or
// AMX-BF16, seen by cpuid and used by oneDNN's dispatch), and one line naming
// what it runs on, e.g. "oneDNN 2.6.3 avx512_core_bf16" for the CLI.
bool bf16_native();
std::string bf16_description();

// Profiling of the linear layers' products, for benchmarks: off unless
// turned on, it never changes a result. While on, every linear_forward and
// linear_backward adds its FLOPs (2 m n k a product) and its seconds; a call
// made inside an OpenMP parallel region (the routed experts run side by
// side) adds its seconds divided by the region's threads, an estimate of
// its share of the wall clock.
struct ProductProfile {
  double flops = 0;
  double seconds = 0;
};
void set_product_profiling(bool on);
ProductProfile product_profile();  // since profiling was last turned on

// Settings the kernels' libraries want before they load, for
// restart_with_defaults (core/process.h) in every program's main:
// - OMP_WAIT_POLICY=PASSIVE: idle OpenMP threads sleep. Spinning ones
//   (libgomp's default) took decode on 2 cores from 340 to 22 tokens/s, and
//   slow training wherever another process shares the cores.
// - OPENBLAS_CORETYPE, only where the CPU has AVX-512 but OpenBLAS picked
//   AVX2 kernels: Debian 12's OpenBLAS (0.3.21) does not know CPUs newer
//   than itself (AMD Zen 5) and falls back to its Haswell kernels, which ran
//   sgemm at a third of the SkylakeX kernels' rate there. Cooperlake
//   (SkylakeX plus bf16 sbgemm) where the CPU has AVX512-BF16. A core the
//   user chose (OPENBLAS_CORETYPE set) is kept.
std::vector<std::pair<std::string, std::string>> kernel_environment_defaults();

// This machine's practical sgemm rate: best of `rounds` n x n x n products
// through the same BLAS and threads as the engine, in GFLOP/s. Lets a slow
// machine be recognised as such next to tokens/s.
double measure_sgemm_gflops(int64_t n = 1024, int rounds = 5);
// The same through gemm_bf16 (bf16 operands, fp32 results).
double measure_gemm_bf16_gflops(int64_t n = 1024, int rounds = 5);

}  // namespace memoe
