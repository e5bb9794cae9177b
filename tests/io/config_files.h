// The presets as JSON, and parse_config's one-line error, for the config tests.
#pragma once
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "core/error.h"
#include "io/config.h"
#include "io/test_files.h"

namespace memoe::io_testing {

inline nlohmann::json preset_json(const std::string& name) {
  return nlohmann::json::parse(read_bytes(std::string(MEMOE_SOURCE_DIR) + "/configs/" + name + ".json"));
}

// parse_config's error for `j` (origin "cfg.json"); fails the test when it parses.
inline std::string parse_error(const nlohmann::json& j) {
  try {
    parse_config(j.dump(), "cfg.json");
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "parsed: " << j.dump();
  return "";
}

}  // namespace memoe::io_testing
