// parse_config (parse + validate). A config it accepts must survive
// config_to_json -> parse_config unchanged. Input: config.json text.
#include <cstdint>
#include <string>

#include "fuzz_util.h"
#include "io/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  return memoe::fuzz::run_one([&] {
    const memoe::ModelConfig c = memoe::parse_config(text, "config.json");
    const std::string json = memoe::config_to_json(c);
    memoe::ModelConfig again;
    try {
      again = memoe::parse_config(json, "config_to_json");
    } catch (const memoe::Error& e) {
      std::fprintf(stderr, "%s\n", e.what());
      memoe::fuzz::require(false, "an accepted config re-parses");
    }
    memoe::fuzz::require(memoe::config_to_json(again) == json, "config_to_json round-trips");
  });
}
