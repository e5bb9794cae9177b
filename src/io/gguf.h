// GGUF v3 files, ggml's format and what llama.cpp loads: "GGUF", version 3,
// the tensor and key counts, typed key-value metadata, one info a tensor
// (name, dims innermost first, ggml type, offset), then the tensors' data,
// each at a multiple of the alignment (general.alignment, 32). All numbers
// little-endian. This is the writer; the file is built in memory and
// written atomically.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace memoe {

// ggml's tensor types that the export writes.
enum class GgufTensorType : uint32_t { F32 = 0, F16 = 1, Q8_0 = 8, BF16 = 30 };
// "f32", "f16", "bf16", "q8_0" <-> type; an unknown name is one line.
GgufTensorType parse_gguf_tensor_type(const std::string& name);
const char* gguf_tensor_type_name(GgufTensorType t);
// Bytes of n values (Q8_0: blocks of 32, a half scale and 32 int8 each).
int64_t gguf_tensor_bytes(GgufTensorType t, int64_t n);
// The values as stored: rounded to nearest (even) for the 16-bit types;
// Q8_0 scales each block of 32 by its largest magnitude / 127.
std::vector<uint8_t> encode_gguf_tensor(GgufTensorType t, const float* values, int64_t n);
// Q8_0's values back (for tolerance checks).
std::vector<float> decode_q8_0(const uint8_t* bytes, int64_t n);

class GgufWriter {
 public:
  void add_u32(const std::string& key, uint32_t value);
  void add_i32(const std::string& key, int32_t value);
  void add_f32(const std::string& key, float value);
  void add_bool(const std::string& key, bool value);
  void add_string(const std::string& key, const std::string& value);
  void add_strings(const std::string& key, const std::vector<std::string>& values);
  void add_f32s(const std::string& key, const std::vector<float>& values);
  void add_i32s(const std::string& key, const std::vector<int32_t>& values);
  // ne: the dims innermost first (ggml's order: a row-major [rows, cols]
  // matrix is ne = {cols, rows}). Q8_0 needs ne[0] a multiple of 32.
  void add_tensor(const std::string& name, const std::vector<int64_t>& ne, GgufTensorType type, const float* values);
  int tensors() const { return int(tensors_.size()); }
  // Writes the file atomically (io/atomic_file.h).
  void write(const std::string& path) const;

 private:
  struct Tensor {
    std::string name;
    std::vector<int64_t> ne;
    GgufTensorType type;
    std::vector<uint8_t> data;
  };
  void key(const std::string& name, uint32_t value_type);
  std::vector<uint8_t> kv_;  // the encoded key-value pairs
  uint64_t n_kv_ = 0;
  std::vector<Tensor> tensors_;
};

}  // namespace memoe
