// NumPy .npy files (format versions 1.0-3.0), used for reference tensors that
// tests compare against and for dumps that Python inspects. Little-endian,
// C order only.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace memoe {

enum class NpyDType { F32, F64, I32, I64 };  // '<f4', '<f8', '<i4', '<i8'

const char* npy_descr(NpyDType dtype);  // "<f4", ...

// An array as stored: the raw little-endian element bytes plus accessors
// that convert them.
struct NpyArray {
  std::string path;  // where it was read from, for error messages
  NpyDType dtype = NpyDType::F32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;

  int64_t numel() const { return static_cast<int64_t>(Tensor::count(shape)); }
  Tensor to_tensor() const;               // any dtype, converted to float32
  std::vector<double> to_f64() const;     // any dtype (int64 beyond 2^53 rounds)
  std::vector<int64_t> to_i64() const;    // integer dtypes only
};

// Reads and validates the whole file; malformed files, Fortran order,
// big-endian or unsupported dtypes give a memoe::Error naming the file.
NpyArray read_npy(const std::string& path);

// Writes NPY v1.0, C order, atomically (see io/atomic_file.h).
void write_npy_f32(const std::string& path, const std::vector<int64_t>& shape, const float* data);
void write_npy_f32(const std::string& path, const Tensor& tensor);
void write_npy_i64(const std::string& path, const std::vector<int64_t>& shape, const int64_t* data);

}  // namespace memoe
