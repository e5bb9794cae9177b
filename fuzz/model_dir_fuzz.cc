// load_model: a model directory (config.json + model.safetensors) written
// from the input (multi-file format, fuzz_util.h).
#include <cstdint>

#include "fuzz_util.h"
#include "model/checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string dir = memoe::fuzz::write_input_dir(data, size, "model");
  return memoe::fuzz::run_one([&] { (void)memoe::load_model(dir); });
}
