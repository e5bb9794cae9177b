// memoe: train, study and run Engram + DeepSeekMoE models.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <exception>

#include "cli/commands.h"
#include "core/error.h"
#include "core/process.h"

int main(int argc, char** argv) {
  // Idle OpenMP threads sleep unless the user says otherwise: spinning ones
  // (libgomp's default) took decode on 2 cores from 340 to 22 tokens/s, and
  // slow training wherever another process shares the cores. The runtime
  // reads the setting when it loads, so the process starts over once with it.
  if (!std::getenv("OMP_WAIT_POLICY") && setenv("OMP_WAIT_POLICY", "PASSIVE", 1) == 0) {
    execv("/proc/self/exe", argv);  // returns only if it failed; then carry on as we are
  }
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
