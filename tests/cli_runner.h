// Runs the memoe binary for the end-to-end tests: a fresh scratch directory
// per test (io/test_files.h's TempDirTest) plus the command's exit status and
// output.
#pragma once
#include <sys/wait.h>

#include <cstdlib>
#include <string>

#include "io/test_files.h"

namespace memoe::testing {

struct CliResult {
  int status = -1;  // exit status; -1 when killed by a signal
  std::string out, err;
};

class CliTest : public io_testing::TempDirTest {
 protected:
  // `memoe ARGS` with OMP_NUM_THREADS=1 (deterministic and fast beside the
  // other tests ctest runs at the same time), or `threads` threads, idle
  // ones sleeping rather than spinning (the test machine has 2 cores).
  CliResult memoe(const std::string& args, int threads = 1) {
    const std::string env = "OMP_NUM_THREADS=" + std::to_string(threads) + (threads > 1 ? " OMP_WAIT_POLICY=PASSIVE " : " ");
    return memoe_with_launcher(env, args);
  }
  // `PREFIX memoe ARGS`: an environment, or a launcher such as mpirun.
  CliResult memoe_with_launcher(const std::string& prefix, const std::string& args) {
    const std::string out = file("stdout"), err = file("stderr");
    const int raw = std::system((prefix + " " + std::string(MEMOE_CLI) + " " + args + " >" + out + " 2>" + err).c_str());
    return {WIFEXITED(raw) ? WEXITSTATUS(raw) : -1, io_testing::read_bytes(out), io_testing::read_bytes(err)};
  }
  std::string path(const std::string& name) const { return file(name); }
};

}  // namespace memoe::testing
