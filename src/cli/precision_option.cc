#include "cli/precision_option.h"

#include <cstdio>

namespace memoe::cli {

CLI::Option* add_precision_option(CLI::App* cmd, std::string& value, const std::string& default_value) {
  value = default_value;
  return cmd
      ->add_option("--precision", value,
                   "matrix products: bf16 (mixed precision), fp32 (exact), or auto: bf16 where the CPU has "
                   "native bf16 (AVX512-BF16, AMX), fp32 elsewhere")
      ->capture_default_str();
}

Precision chosen_precision(const std::string& value) {
  return value == "auto" ? default_precision() : parse_precision(value);
}

void apply_precision(Model& m, const std::string& value, bool announce) {
  const Precision p = chosen_precision(value);
  m.params.set_precision(p);
  if (announce) std::fprintf(stderr, "%s\n", precision_line(p).c_str());
}

}  // namespace memoe::cli
