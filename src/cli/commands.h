// Subcommands of the memoe CLI; each registers itself on the app.
#pragma once
#include <CLI/CLI.hpp>

namespace memoe::cli {

void add_params_command(CLI::App& app);
void add_init_command(CLI::App& app);
void add_logits_command(CLI::App& app);
void add_tokenizer_command(CLI::App& app);
void add_prepare_command(CLI::App& app);
void add_generate_command(CLI::App& app);
void add_train_command(CLI::App& app);
void add_eval_command(CLI::App& app);
void add_machine_command(CLI::App& app);
void add_niah_command(CLI::App& app);
void add_analyze_command(CLI::App& app);
void add_plan_command(CLI::App& app);
void add_export_command(CLI::App& app);
void add_serve_command(CLI::App& app);

}  // namespace memoe::cli
