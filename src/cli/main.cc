// memoe: train, study and run Engram + DeepSeekMoE models.
#include <cstdio>
#include <exception>

#include "cli/commands.h"
#include "core/error.h"
#include "core/process.h"
#include "kernels/linear.h"

int main(int argc, char** argv) {
  memoe::restart_with_defaults(argv, memoe::kernel_environment_defaults());
  memoe::keep_freed_memory_for_reuse();
  CLI::App app{"memoe: an engine for Engram + DeepSeekMoE language models"};
  app.require_subcommand(1);
  memoe::cli::add_params_command(app);
  memoe::cli::add_init_command(app);
  memoe::cli::add_logits_command(app);
  memoe::cli::add_tokenizer_command(app);
  memoe::cli::add_prepare_command(app);
  memoe::cli::add_generate_command(app);
  memoe::cli::add_train_command(app);
  memoe::cli::add_eval_command(app);
  memoe::cli::add_machine_command(app);
  memoe::cli::add_niah_command(app);
  memoe::cli::add_analyze_command(app);
  memoe::cli::add_plan_command(app);
  memoe::cli::add_export_command(app);
  memoe::cli::add_serve_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const memoe::Error& e) {
    std::fprintf(stderr, "memoe: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "memoe: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
