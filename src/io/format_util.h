// Small helpers shared by the file-format readers and writers.
#pragma once
#include <cstdint>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>

namespace memoe {

// A little-endian value from possibly unaligned bytes (the formats are
// little-endian; so is every host the engine runs on).
template <typename T>
T load_le(const uint8_t* p) {
  T value;
  std::memcpy(&value, p, sizeof(T));
  return value;
}

// A name as a JSON string literal: quoted, and escaped so that a hostile name
// cannot break a one-line error message.
inline std::string quoted(const std::string& name) {
  return nlohmann::json(name).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace memoe
