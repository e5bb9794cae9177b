// Shared helpers for the file-format tests: a fresh temporary directory per
// test (tests of several helpers run side by side) and raw byte I/O.
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

namespace memoe::io_testing {

class TempDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = std::filesystem::temp_directory_path() /
           ("memoe_" + std::to_string(::getpid()) + "_" + test->test_suite_name() + "_" + test->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string file(const std::string& name) const { return (dir_ / name).string(); }
  int regular_files() const {
    int count = 0;
    for (const auto& entry : std::filesystem::directory_iterator(dir_)) count += entry.is_regular_file();
    return count;
  }
  std::filesystem::path dir_;
};

inline std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

inline void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Little-endian bytes of an integer.
inline std::string le_bytes(uint64_t value, int width) {
  std::string s(static_cast<size_t>(width), '\0');
  for (int i = 0; i < width; ++i) s[static_cast<size_t>(i)] = static_cast<char>(value >> (8 * i));
  return s;
}

}  // namespace memoe::io_testing
