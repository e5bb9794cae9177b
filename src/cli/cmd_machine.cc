// memoe machine: what this CPU gives the engine, measured now: the matrix
// products' libraries and instruction sets, the precision `auto` picks, and
// the fp32 and bf16 product rates (like llama.cpp's system info, with numbers).
#include <omp.h>

#include <cstdio>

#include "cli/commands.h"
#include "kernels/linear.h"
#include "kernels/matmul_bf16.h"

namespace memoe::cli {

void add_machine_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("machine", "Show this CPU's matrix-product paths and rates, and the default precision");
  cmd->callback([] {
    std::printf("threads                 %d (OMP_NUM_THREADS)\n", omp_get_max_threads());
    std::printf("fp32 products           OpenBLAS sgemm, core %s\n", openblas_core_name().c_str());
    std::printf("bf16 products           %s\n", bf16_description().c_str());
    std::printf("native bf16             %s\n", bf16_native() ? "yes" : "no (bf16 runs, emulated or widened to fp32)");
    std::printf("--precision auto        %s\n", precision_name(default_precision()));
    const double sgemm = measure_sgemm_gflops(1024, 5), bf16 = measure_gemm_bf16_gflops(1024, 5);
    std::printf("1024^3 product          sgemm %.1f GFLOP/s, bf16 %.1f GFLOP/s (%.2fx)\n", sgemm, bf16, bf16 / sgemm);
  });
}

}  // namespace memoe::cli
