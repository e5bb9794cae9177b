// Errors: every bad input becomes a memoe::Error carrying one line that names
// the problem; the CLI prints it and exits non-zero.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>
#include <system_error>

namespace memoe {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {
template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

// The operating system's words for an errno value.
inline std::string os_reason(int error_number) { return std::system_category().message(error_number); }

// Throws memoe::Error with the arguments streamed into one message.
template <typename... Args>
[[noreturn]] void fail(const Args&... args) {
  throw Error(detail::concat(args...));
}

}  // namespace memoe

// Checks a condition that depends on input (never compiled out).
#define MEMOE_CHECK(cond, ...)                  \
  do {                                          \
    if (!(cond)) ::memoe::fail(__VA_ARGS__);    \
  } while (0)
