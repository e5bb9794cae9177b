// bf16 matrix products beside fp32 sgemm, in one run on the same threads:
// GFLOP/s of the engine's gemm (OpenBLAS sgemm, fp32), oneDNN's bf16 matmul
// and OpenBLAS's cblas_sbgemm (where the OpenBLAS loaded has it), over the
// small preset's training products (4096 rows = batch 16 x 256) and squares.
// Best of --rounds timed calls after one untimed call, which for oneDNN also
// creates and caches the primitive (its time is printed as "first").
//
//   build/memoe_matmul_bench [--threads 2] [--rounds 5]
//   ONEDNN_VERBOSE=1 build/memoe_matmul_bench   (oneDNN names its kernels)
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

#include "core/process.h"
#include "kernels/linear.h"
#include "kernels/matmul_bf16.h"

using namespace memoe;

namespace {

double seconds(const std::function<void()>& fn) {
  const auto t0 = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

struct Shape {
  const char* what;
  bool trans_a, trans_b;
  int64_t m, n, k;
};

}  // namespace

int main(int argc, char** argv) {
  memoe::restart_with_defaults(argv, memoe::kernel_environment_defaults());
  int threads = 2, rounds = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--threads")) threads = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--rounds")) rounds = std::atoi(argv[i + 1]);
    else { std::fprintf(stderr, "usage: %s [--threads N] [--rounds N]\n", argv[0]); return 2; }
  }
  omp_set_num_threads(threads);
  // configs/small.json: hidden 256, dense FFN 768 (gate+up 1536), experts
  // 128 (gate+up 256) with ~512 rows each (4096 x top-2 / 16), 4 heads x
  // (32 + 16) queries, vocabulary 8192; "x W^T" forward, then backward dx, dW.
  const Shape shapes[] = {
      {"LM head fwd", false, true, 4096, 8192, 256},  {"LM head dx", false, false, 4096, 256, 8192},
      {"LM head dW", true, false, 8192, 256, 4096},   {"FFN gate+up fwd", false, true, 4096, 1536, 256},
      {"FFN down fwd", false, true, 4096, 256, 768},  {"FFN down dW", true, false, 256, 768, 4096},
      {"expert up fwd", false, true, 512, 256, 256},  {"expert down fwd", false, true, 512, 256, 128},
      {"q proj fwd", false, true, 4096, 192, 256},    {"square 1024", false, false, 1024, 1024, 1024},
      {"square 2048", false, false, 2048, 2048, 2048},
  };
  std::printf("threads %d; oneDNN %s, ISA %s; OpenBLAS core %s, sbgemm %s; %s\n", threads, onednn_version().c_str(),
              onednn_isa_name().c_str(), openblas_core_name().c_str(),
              openblas_has_sbgemm() ? "exported" : "not exported", bf16_description().c_str());
  std::printf("%-16s %5s %5s %5s %3s | %9s %9s %9s | %8s | %s\n", "product", "m", "n", "k", "op", "sgemm", "oneDNN",
              "sbgemm", "1st ms", "oneDNN implementation");
  for (const Shape& s : shapes) {
    const int64_t lda = s.trans_a ? s.m : s.k, ldb = s.trans_b ? s.k : s.n;
    const size_t a_size = size_t(s.m * s.k), b_size = size_t(s.k * s.n);
    std::vector<float> a(a_size), b(b_size), c(size_t(s.m * s.n));
    for (size_t i = 0; i < a_size; ++i) a[i] = float(i % 7) * 0.25f - 0.75f;
    for (size_t i = 0; i < b_size; ++i) b[i] = float(i % 5) * 0.25f - 0.5f;
    std::vector<uint16_t> a16(a_size), b16(b_size);
    to_bf16(a.data(), int64_t(a_size), a16.data());
    to_bf16(b.data(), int64_t(b_size), b16.data());
    const double flop = 2.0 * double(s.m) * double(s.n) * double(s.k);
    auto best_gflops = [&](const std::function<void()>& fn) {
      double best = 1e30;
      for (int r = 0; r < rounds; ++r) best = std::min(best, seconds(fn));
      return flop / best / 1e9;
    };
    auto fp32 = [&] { gemm(s.trans_a, s.trans_b, s.m, s.n, s.k, 1.0f, a.data(), lda, b.data(), ldb, 0.0f, c.data(), s.n); };
    auto via = [&](Bf16Library library) {
      return [&, library] {
        gemm_bf16_with(library, s.trans_a, s.trans_b, s.m, s.n, s.k, 1.0f, a16.data(), lda, b16.data(), ldb, 0.0f,
                       c.data(), s.n);
      };
    };
    fp32();
    const double sgemm = best_gflops(fp32);
    const double first_ms = seconds(via(Bf16Library::onednn)) * 1e3;
    const double onednn = best_gflops(via(Bf16Library::onednn));
    double sbgemm = 0;
    if (openblas_has_sbgemm()) {
      via(Bf16Library::openblas)();
      sbgemm = best_gflops(via(Bf16Library::openblas));
    }
    char sb[16] = "n/a";
    if (sbgemm > 0) std::snprintf(sb, sizeof sb, "%9.1f", sbgemm);
    std::printf("%-16s %5ld %5ld %5ld %c%c  | %9.1f %9.1f %9s | %8.2f | %s\n", s.what, long(s.m), long(s.n),
                long(s.k), s.trans_a ? 'T' : 'N', s.trans_b ? 'T' : 'N', sgemm, onednn, sb, first_ms,
                onednn_impl_name(s.trans_a, s.trans_b, s.m, s.n, s.k).c_str());
  }
  return 0;
}
