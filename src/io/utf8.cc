#include "io/utf8.h"

#include <utf8proc.h>

#include "core/error.h"

namespace memoe {

namespace {
// Length of the valid sequence at `pos` (code point in *cp), or -1.
ptrdiff_t next_code_point(std::string_view text, size_t pos, int32_t* cp) {
  const auto* bytes = reinterpret_cast<const utf8proc_uint8_t*>(text.data()) + pos;
  return utf8proc_iterate(bytes, utf8proc_ssize_t(text.size() - pos), cp);
}
}  // namespace

size_t find_invalid_utf8(std::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    if (static_cast<unsigned char>(text[pos]) < 0x80) {  // ASCII fast path
      ++pos;
      continue;
    }
    int32_t cp = 0;
    const ptrdiff_t len = next_code_point(text, pos, &cp);
    if (len <= 0) return pos;
    pos += size_t(len);
  }
  return std::string_view::npos;
}

std::vector<int32_t> utf8_to_code_points(std::string_view text, std::string_view what) {
  std::vector<int32_t> out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    int32_t cp = 0;
    const ptrdiff_t len = next_code_point(text, pos, &cp);
    MEMOE_CHECK(len > 0, what, " is not valid UTF-8 (byte offset ", pos, ")");
    out.push_back(cp);
    pos += size_t(len);
  }
  return out;
}

void append_utf8(std::string& out, int32_t code_point) {
  utf8proc_uint8_t buf[4];
  const utf8proc_ssize_t len = utf8proc_encode_char(code_point, buf);
  MEMOE_CHECK(len > 0, "code point ", code_point, " cannot be encoded as UTF-8");
  out.append(reinterpret_cast<const char*>(buf), size_t(len));
}

}  // namespace memoe
