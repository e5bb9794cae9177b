// Token ids on the command line: "1,2,3" with ';' between sequences.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace memoe::cli {

// Rows of equal length; a malformed number is an error naming it.
std::vector<std::vector<int64_t>> parse_id_rows(const std::string& text);

}  // namespace memoe::cli
