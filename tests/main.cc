// The tests run under the environment every memoe program gives its
// libraries (kernel_environment_defaults): the thread-count tests hold
// for the kernels the engine actually runs on.
#include <gtest/gtest.h>

#include "core/process.h"
#include "kernels/linear.h"

int main(int argc, char** argv) {
  memoe::restart_with_defaults(argv, memoe::kernel_environment_defaults());
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
