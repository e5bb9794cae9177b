// Benchmarks run each contender as a child process (its own threads, its
// own peak RSS) that prints its result as a JSON object on its last line.
#pragma once
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

namespace memoe::bench {

// Runs a command and returns the JSON object on the last line it prints
// that starts with '{' (null on failure, with its output on stderr).
inline nlohmann::json run_json(const std::string& cmd) {
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return nullptr;
  char line[8192] = {0};
  std::string out, last;
  while (fgets(line, sizeof line, p)) {
    out += line;
    if (line[0] == '{') last = line;
  }
  if (pclose(p) != 0 || last.empty()) {
    std::fprintf(stderr, "benchmark child failed: %s\n%s\n", cmd.c_str(), out.c_str());
    return nullptr;
  }
  return nlohmann::json::parse(last, nullptr, false);
}

}  // namespace memoe::bench
