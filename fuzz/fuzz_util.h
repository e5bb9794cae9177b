// Shared by the libFuzzer targets in this folder: a private scratch
// directory (the readers under test take paths), the multi-file input
// format for readers of whole directories, and the one expected outcome for
// bad input (memoe::Error). Any other exception escapes to libFuzzer, which
// reports it, as it does crashes, sanitizer reports, timeouts and OOMs.
//
// Multi-file inputs hold files one after the other, each as
//   "@@file:" NAME "\n" CONTENT "\n"
// where the marker starts the input or follows a "\n" (the last byte of the
// previous file's section) and NAME is 1..64 of [A-Za-z0-9._-], not
// starting with '.'. Sections with other names are ignored; bytes before the
// first marker too. scripts/fuzz.sh packs real directories this way.
#pragma once
#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/error.h"

namespace memoe::fuzz {

namespace fs = std::filesystem;

// Created on first use under $TMPDIR (or /tmp), removed at exit.
inline const std::string& scratch_dir() {
  static const std::string dir = [] {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/memoe-fuzz-XXXXXX";
    if (!::mkdtemp(pattern.data())) {
      std::perror("mkdtemp");
      std::abort();
    }
    static const std::string remove_at_exit = pattern;
    std::atexit([] {
      std::error_code ec;
      fs::remove_all(remove_at_exit, ec);
    });
    return pattern;
  }();
  return dir;
}

inline void write_file(const std::string& path, std::string_view bytes) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f || std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size() || std::fclose(f) != 0) {
    std::perror(path.c_str());
    std::abort();  // the harness itself failed: not a finding in the reader
  }
}

// The input as one file in the scratch directory; returns its path.
inline std::string write_input(const uint8_t* data, size_t size, const char* name) {
  const std::string path = scratch_dir() + "/" + name;
  write_file(path, std::string_view(reinterpret_cast<const char*>(data), size));
  return path;
}

inline bool valid_name(std::string_view name) {
  if (name.empty() || name.size() > 64 || name[0] == '.') return false;
  for (char c : name)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
          c == '.'))
      return false;
  return true;
}

// The named sections of a multi-file input, in order.
inline std::vector<std::pair<std::string, std::string_view>> split_files(const uint8_t* data, size_t size) {
  static constexpr std::string_view kMarker = "@@file:";
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  auto next_marker = [&](size_t from) {  // position of a marker at a line start
    for (size_t pos = in.find(kMarker, from); pos != std::string_view::npos; pos = in.find(kMarker, pos + 1))
      if (pos == 0 || in[pos - 1] == '\n') return pos;
    return std::string_view::npos;
  };
  std::vector<std::pair<std::string, std::string_view>> files;
  for (size_t marker = next_marker(0); marker != std::string_view::npos;) {
    const size_t name_begin = marker + kMarker.size();
    const size_t name_end = in.find('\n', name_begin);
    if (name_end == std::string_view::npos) break;
    const size_t next = next_marker(name_end + 1);
    size_t content_end = next == std::string_view::npos ? in.size() : next;
    if (content_end > name_end + 1 && in[content_end - 1] == '\n') --content_end;  // the separator
    const std::string_view name = in.substr(name_begin, name_end - name_begin);
    if (valid_name(name))
      files.emplace_back(std::string(name), in.substr(name_end + 1, content_end - (name_end + 1)));
    marker = next;
  }
  return files;
}

// Empties DIR (inside the scratch directory) and writes the input's files
// into it; returns DIR's path.
inline std::string write_input_dir(const uint8_t* data, size_t size, const char* dir_name) {
  const std::string dir = scratch_dir() + "/" + dir_name;
  std::error_code ec;
  fs::remove_all(dir, ec);
  fs::create_directory(dir);
  for (const auto& [name, content] : split_files(data, size)) write_file(dir + "/" + name, content);
  return dir;
}

// Runs one input; a memoe::Error is the expected way to refuse bad input.
template <typename F>
int run_one(F&& body) {
  try {
    body();
  } catch (const memoe::Error&) {
  }
  return 0;
}

// For invariants that hold for every input a reader accepts.
inline void require(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz invariant violated: %s\n", what);
    std::abort();
  }
}

}  // namespace memoe::fuzz
