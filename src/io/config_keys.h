// The reading and checking helpers of config parsing, shared by config.cc
// (memoe's and DeepSeek-V3's keys) and config_v4.cc (DeepSeek-V4's two
// spellings). Internal to io/.
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "core/error.h"
#include "io/config.h"

namespace memoe::config_detail {

using nlohmann::json;

// ------------------------------------------------------------------ reading

inline std::string shown(const json& v) {
  std::string s = v.dump();
  return s.size() > 40 ? s.substr(0, 37) + "..." : s;
}

// JSON number -> integer type T (int or int64_t), or one line naming `name`.
// An integral float (4.0, 1e3) is accepted as that integer, as before: tools
// that write every number as a double produce such files. A non-integral one
// (1.5), one outside T's range (1e20 for int64, 2^31 for int) or a non-number
// (string, bool, null) is refused; nothing is truncated or wrapped.
template <typename T>
T to_integer(const json& v, const std::string& name, const std::string& where) {
  static_assert(std::is_signed_v<T> && std::is_integral_v<T>);
  using Lim = std::numeric_limits<T>;
  const char* type = sizeof(T) == 8 ? "int64" : "int32";
  if (v.is_number_unsigned()) {  // nlohmann keeps non-negative literals as uint64
    const uint64_t u = v.get<uint64_t>();
    MEMOE_CHECK(u <= uint64_t(Lim::max()), where, ": key '", name, "' = ", u, " is out of range for ", type);
    return T(u);
  }
  if (v.is_number_integer()) {
    const int64_t i = v.get<int64_t>();
    MEMOE_CHECK(i >= int64_t(Lim::min()) && i <= int64_t(Lim::max()), where, ": key '", name, "' = ", i,
                " is out of range for ", type);
    return T(i);
  }
  MEMOE_CHECK(v.is_number_float(), where, ": key '", name, "' must be an integer, got ", shown(v));
  const double d = v.get<double>();
  MEMOE_CHECK(std::isfinite(d) && std::floor(d) == d, where, ": key '", name, "' must be an integer, got ", shown(v));
  // [-2^k, 2^k) is exactly T's range, and both ends are exact doubles.
  const double lo = double(Lim::min());
  MEMOE_CHECK(d >= lo && d < -lo, where, ": key '", name, "' = ", shown(v), " is out of range for ", type);
  return T(d);
}

// What a JSON null means for a numeric key.
enum class Null { Refuse, Default };

// Reads the keys of one JSON object (the config or a nested object, whose
// keys errors name as "prefix.key"). A missing key keeps its default. A null
// keeps the default for booleans and strings; for numbers it is refused
// unless the caller gives it a meaning (Null::Default).
class Keys {
 public:
  Keys(const json& object, const std::string& where, std::string prefix = "")
      : j_(object), where_(where), prefix_(std::move(prefix)) {}

  template <typename T>
  void get(const char* key, T& out, Null null = Null::Refuse) const {
    auto it = j_.find(key);
    if (it == j_.end()) return;
    const std::string name = prefix_ + key;
    if constexpr (std::is_same_v<T, bool>) {
      if (it->is_null()) return;
      MEMOE_CHECK(it->is_boolean(), where_, ": key '", name, "' must be a boolean, got ", shown(*it));
      out = it->get<bool>();
    } else if constexpr (std::is_same_v<T, std::string>) {
      if (it->is_null()) return;
      MEMOE_CHECK(it->is_string(), where_, ": key '", name, "' must be a string, got ", shown(*it));
      out = it->get<std::string>();
    } else {
      if (it->is_null() && null == Null::Default) return;
      if constexpr (std::is_integral_v<T>) {
        out = to_integer<T>(*it, name, where_);
      } else {
        static_assert(std::is_same_v<T, double>);
        // JSON has no NaN or inf, but an overflowing literal (1e400) parses as inf.
        MEMOE_CHECK(it->is_number() && std::isfinite(it->get<double>()), where_, ": key '", name,
                    "' must be a finite number, got ", shown(*it));
        out = it->get<double>();
      }
    }
  }

  // A list of integers (engram.layer_ids, engram.table_sizes); must be present.
  template <typename T>
  std::vector<T> list(const char* key) const {
    auto it = j_.find(key);
    const std::string name = prefix_ + key;
    MEMOE_CHECK(it != j_.end() && it->is_array(), where_, ": key '", name, "' must be a list");
    std::vector<T> out;
    for (const json& v : *it) out.push_back(to_integer<T>(v, name, where_));
    return out;
  }

  bool has(const char* key) const { return j_.contains(key); }

 private:
  const json& j_;
  const std::string& where_;
  std::string prefix_;
};

// ------------------------------------------------------------------ checks

inline void check(bool ok, const std::string& key, const std::string& why) {
  if (!ok) fail("config: ", key, " ", why);
}

inline void check_range(int64_t v, int64_t lo, int64_t hi, const std::string& key) {
  check(v >= lo && v <= hi, key,
        "= " + std::to_string(v) + " is outside " + std::to_string(lo) + ".." + std::to_string(hi));
}

inline void check_finite(double v, const std::string& key) { check(std::isfinite(v), key, "must be a finite number"); }

// ------------------------------------------------------------------ shared keys

// rope_scaling as DeepSeek-V3's config writes it (mscale and mscale_all_dim
// required) or V4's (no mscale: V4 applies none). Null or absent: none.
enum class YarnSpelling { DeepSeekV3, DeepSeekV4 };
std::optional<YarnConfig> read_yarn(const json& config, const std::string& origin, YarnSpelling spelling);
json yarn_json(const std::optional<YarnConfig>& yarn, YarnSpelling spelling);

}  // namespace memoe::config_detail
