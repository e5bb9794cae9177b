// --precision auto|bf16|fp32, shared by the commands that run the model.
#pragma once
#include <CLI/CLI.hpp>
#include <string>

#include "kernels/linear.h"

namespace memoe::cli {

// Registers --precision on cmd, stored as text in `value` (default "auto").
CLI::Option* add_precision_option(CLI::App* cmd, std::string& value);
// "auto" is bf16 where the CPU has native bf16 instructions and fp32
// elsewhere; anything but auto, bf16 or fp32 is one line naming it.
Precision chosen_precision(const std::string& value);

}  // namespace memoe::cli
