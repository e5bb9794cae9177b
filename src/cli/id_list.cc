#include "cli/id_list.h"

#include "core/error.h"

namespace memoe::cli {

std::vector<std::vector<int64_t>> parse_id_rows(const std::string& text) {
  std::vector<std::vector<int64_t>> rows(1);
  std::string num;
  auto flush = [&] {
    MEMOE_CHECK(!num.empty(), "--ids: empty token id in '", text, "'");
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(num, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    MEMOE_CHECK(used == num.size(), "--ids: '", num, "' is not an integer");
    rows.back().push_back(v);
    num.clear();
  };
  for (char ch : text) {
    if (ch == ',' || ch == ';') {
      flush();
      if (ch == ';') rows.emplace_back();
    } else if (ch != ' ') {
      num += ch;
    }
  }
  flush();
  for (const auto& r : rows)
    MEMOE_CHECK(r.size() == rows[0].size(), "--ids: every sequence must have the same length (", rows[0].size(),
                " vs ", r.size(), ")");
  return rows;
}

}  // namespace memoe::cli
