// Subcommands of the memoe CLI; each registers itself on the app.
#pragma once
#include <CLI/CLI.hpp>

namespace memoe::cli {

void add_params_command(CLI::App& app);
void add_init_command(CLI::App& app);
void add_logits_command(CLI::App& app);

}  // namespace memoe::cli
