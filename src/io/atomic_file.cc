#include "io/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "core/error.h"

namespace memoe {
namespace {

constexpr size_t kBufferBytes = 1 << 20;

// Makes the rename itself durable. Best effort: some filesystems refuse to
// fsync a directory, and the data is already safe by then.
void sync_parent_directory(const std::string& path) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  const std::string dir = parent.empty() ? std::string(".") : parent.string();
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  (void)::fsync(fd);
  ::close(fd);
}

}  // namespace

std::string unique_temp_suffix() {
  static std::atomic<uint64_t> counter{0};
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0 || host[0] == 0) std::strcpy(host, "host");
  for (char* c = host; *c; ++c)
    if (*c == '/' || *c == '.') *c = '_';  // stays one path component
  return std::string(host) + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
}

AtomicFileWriter::AtomicFileWriter(std::string path) : path_(std::move(path)) {
  MEMOE_CHECK(!path_.empty(), "cannot write a file with an empty path");
  temp_path_ = path_ + ".tmp." + unique_temp_suffix();
  fd_ = ::open(temp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd_ < 0) fail("cannot write ", path_, ": ", os_reason(errno));
  buffer_.reserve(kBufferBytes);
}

AtomicFileWriter::~AtomicFileWriter() {
  if (!committed_) discard();
}

void AtomicFileWriter::discard() noexcept {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
    ::unlink(temp_path_.c_str());
  }
}

void AtomicFileWriter::abandon(int error_number) {
  discard();
  fail("cannot write ", path_, ": ", os_reason(error_number));
}

void AtomicFileWriter::write_all(const char* data, size_t size) {
  while (size > 0) {
    const ssize_t n = ::write(fd_, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      abandon(errno);
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
}

void AtomicFileWriter::flush_buffer() {
  write_all(buffer_.data(), buffer_.size());
  buffer_.clear();
}

void AtomicFileWriter::write(const void* data, size_t size) {
  MEMOE_CHECK(fd_ >= 0 && !committed_, "cannot write ", path_, ": writer already closed");
  const char* bytes = static_cast<const char*>(data);
  if (buffer_.size() + size > kBufferBytes) flush_buffer();
  if (size >= kBufferBytes) {
    write_all(bytes, size);  // large blocks skip the copy
  } else {
    buffer_.insert(buffer_.end(), bytes, bytes + size);
  }
}

void AtomicFileWriter::commit() {
  MEMOE_CHECK(fd_ >= 0 && !committed_, "cannot write ", path_, ": writer already closed");
  flush_buffer();
  if (::fsync(fd_) != 0) abandon(errno);
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(temp_path_.c_str());
    fail("cannot write ", path_, ": ", os_reason(err));
  }
  if (std::rename(temp_path_.c_str(), path_.c_str()) != 0) {
    const int err = errno;
    ::unlink(temp_path_.c_str());
    fail("cannot write ", path_, ": ", os_reason(err));
  }
  committed_ = true;
  sync_parent_directory(path_);
}

void write_file_atomic(const std::string& path, const std::string& bytes) {
  AtomicFileWriter writer(path);
  writer.write(bytes);
  writer.commit();
}

}  // namespace memoe
