#include "cli/precision_option.h"

namespace memoe::cli {

CLI::Option* add_precision_option(CLI::App* cmd, std::string& value) {
  value = "auto";
  return cmd
      ->add_option("--precision", value,
                   "matrix products: bf16 (mixed precision), fp32 (exact), or auto: bf16 where the CPU has "
                   "native bf16 (AVX512-BF16, AMX), fp32 elsewhere")
      ->capture_default_str();
}

Precision chosen_precision(const std::string& value) {
  return value == "auto" ? default_precision() : parse_precision(value);
}

}  // namespace memoe::cli
