// Atomic file writes: data goes to "<path>.tmp.<host>-<pid>-<n>", is fsync'ed, and is
// then renamed over the target, so readers (and a crash) see either the old
// file or the complete new one, never a half-written file.
#pragma once
#include <cstddef>
#include <string>
#include <vector>

namespace memoe {

// Streams bytes into a temporary file; commit() publishes it. Destroying the
// writer without commit() (e.g. while an exception unwinds) removes the
// temporary and leaves the target untouched. Errors name the target path and
// the OS reason: "cannot write /no/such/dir/x.npy: No such file or directory".
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::string path);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  void write(const void* data, size_t size);
  void write(const std::string& bytes) { write(bytes.data(), bytes.size()); }
  // Flushes, fsyncs, closes and renames over the target. Call once.
  void commit();

  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return temp_path_; }

 private:
  void flush_buffer();
  void write_all(const char* data, size_t size);
  // Closes and removes the temporary, then throws with the OS reason.
  [[noreturn]] void abandon(int error_number);
  void discard() noexcept;

  std::string path_;
  std::string temp_path_;
  int fd_ = -1;
  bool committed_ = false;
  std::vector<char> buffer_;  // batches small writes into few syscalls
};

// "<host>-<pid>-<n>": unique per host, process and call, so temporaries of
// processes on several hosts (MPI ranks on a shared filesystem) never collide.
std::string unique_temp_suffix();

// Writes all of `bytes` to `path` atomically.
void write_file_atomic(const std::string& path, const std::string& bytes);

}  // namespace memoe
