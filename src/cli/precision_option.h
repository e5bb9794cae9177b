// --precision auto|bf16|fp32, shared by the commands that run the model.
#pragma once
#include <CLI/CLI.hpp>
#include <string>

#include "kernels/linear.h"
#include "model/model.h"

namespace memoe::cli {

// Registers --precision on cmd, stored as text in `value`.
CLI::Option* add_precision_option(CLI::App* cmd, std::string& value, const std::string& default_value = "auto");
// "auto" is bf16 where the CPU has native bf16 instructions and fp32
// elsewhere; anything but auto, bf16 or fp32 is one line naming it.
Precision chosen_precision(const std::string& value);
// Sets the model's precision from the option's value; with `announce`,
// says so in a line on stderr.
void apply_precision(Model& m, const std::string& value, bool announce = true);

}  // namespace memoe::cli
