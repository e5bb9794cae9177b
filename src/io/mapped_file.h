// A read-only memory map of one whole file, the one way memoe maps files
// (token shards, safetensors checkpoints): pages load on demand, so memory
// does not grow with the file's size.
#pragma once
#include <cstddef>
#include <string>

namespace memoe {

class MappedFile {
 public:
  // Fails with one line naming the path: missing, not a regular file, or
  // not mappable. An empty file maps to data() == nullptr, size() == 0.
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const unsigned char* data() const { return data_; }
  size_t size() const { return size_; }
  // Drops this process's mapping of [offset, offset + length) (the kernel
  // keeps the page cache), so a full scan does not inflate resident memory.
  void release(size_t offset, size_t length) const;

 private:
  const unsigned char* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace memoe
