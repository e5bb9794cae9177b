// Hugging Face safetensors files: an 8-byte little-endian header length N,
// N bytes of JSON ({name: {dtype, shape, data_offsets: [begin, end]}, and an
// optional "__metadata__": {str: str}}), then the data buffer that the
// offsets index into.
//
// The reader memory-maps the file (read-only) and validates the whole header
// on open, so no later access can read outside the file. Caveat of mmap: if
// another process truncates the file while it is open, touching the lost
// pages raises SIGBUS; checkpoints are not expected to change under a run.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/mapped_file.h"

namespace memoe {

// Every dtype the format defines, so that a file holding tensors this engine
// cannot convert (FP8, U8, ...) still opens and its other tensors load.
enum class DType { BOOL, U8, I8, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64, F8_E4M3, F8_E5M2 };

const char* dtype_name(DType dtype);  // "F32", "BF16", ...
size_t dtype_size(DType dtype);       // bytes per element

struct TensorInfo {
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  // Byte range [begin, end) relative to the start of the data buffer, as in
  // the file's data_offsets.
  uint64_t begin = 0;
  uint64_t end = 0;
  int64_t numel() const;
};

class SafetensorsFile {
 public:
  // Maps and validates the file; any malformation is a memoe::Error naming
  // the file and, where it applies, the tensor.
  static SafetensorsFile open(const std::string& path);

  const std::string& path() const { return path_; }
  bool has(const std::string& name) const { return tensors_.count(name) != 0; }
  std::vector<std::string> names() const;  // sorted
  const TensorInfo& info(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // Float tensors (F32, BF16, F16, F64) converted to float32.
  Tensor read_f32(const std::string& name) const;
  // Same, into caller memory of exactly `count` floats (e.g. one slice of a
  // stacked expert buffer).
  void read_f32_into(const std::string& name, float* out, int64_t count) const;
  // The stored values of an F32 or BF16 tensor, viewed in the mapping
  // without a copy (read-only; the view keeps the file mapped). Another
  // dtype, or values not aligned to their element size, is one line naming
  // the tensor: the caller reads it with read_f32 instead.
  Tensor view(const std::string& name) const;
  // Whether view(name) would succeed.
  bool viewable(const std::string& name) const;
  // Integer tensors (I64, I32) widened to int64.
  std::vector<int64_t> read_i64(const std::string& name) const;
  // The stored bytes, unconverted (for formats read_* does not handle).
  std::span<const uint8_t> raw_bytes(const std::string& name) const;

 private:
  SafetensorsFile() = default;

  std::string path_;
  std::shared_ptr<const MappedFile> mapping_;
  const uint8_t* data_ = nullptr;  // start of the data buffer inside mapping_
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Collects tensors (copying them) and writes one file atomically. The JSON
// header lists tensors sorted by name; in the data buffer tensors are packed
// without gaps (as the reference implementation requires), wider element
// types first and by name within a type, so every tensor starts at a multiple
// of its element size; the header is padded with spaces so the data buffer
// starts 8-byte aligned.
class SafetensorsWriter {
 public:
  // `stored` is F32 or BF16 (rounded to nearest even).
  void add_f32(const std::string& name, const Tensor& tensor, DType stored = DType::F32);
  void add_f32(const std::string& name, std::vector<int64_t> shape, const float* data,
               DType stored = DType::F32);
  // Stores F32 without copying: `tensor` must stay alive and unchanged until
  // write() returns (checkpoints of large models need no second copy).
  void add_f32_view(const std::string& name, const Tensor& tensor);
  void add_f32_view(const std::string& name, std::vector<int64_t> shape, const float* data);
  void add_i64(const std::string& name, std::vector<int64_t> shape, const int64_t* data);
  void set_metadata(const std::string& key, const std::string& value);
  void write(const std::string& path) const;

 private:
  struct Entry {
    DType dtype;
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;   // owned data, or
    const void* view = nullptr;   // the caller's (add_f32_view)
    size_t size = 0;              // bytes either way
  };
  Entry& new_entry(const std::string& name, DType dtype, std::vector<int64_t> shape, bool allocate);

  std::map<std::string, Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace memoe
