// Tensor: a dense, row-major float32 buffer with a shape. Owns its memory;
// layers take raw pointers into it so that kernels stay plain loops.
// A weight may also carry a bfloat16 copy of its values for mixed-precision
// matrix products (kernels/linear.h reads it when present); whoever changes
// the values refreshes the copy (ModelParams::refresh_bf16_copies).
#pragma once
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

namespace memoe {

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::vector<int64_t> shape) : shape_(std::move(shape)), data_(count(shape_), 0.0f) {}

  float* data() { return data_.data(); }
  const float* data() const { return data_.data(); }
  float& operator[](int64_t i) { return data_[static_cast<size_t>(i)]; }
  float operator[](int64_t i) const { return data_[static_cast<size_t>(i)]; }

  int64_t numel() const { return static_cast<int64_t>(data_.size()); }
  const std::vector<int64_t>& shape() const { return shape_; }
  int64_t dim(size_t i) const { return shape_.at(i); }
  int ndim() const { return static_cast<int>(shape_.size()); }
  bool empty() const { return data_.empty(); }

  void zero() { std::fill(data_.begin(), data_.end(), 0.0f); }
  // Changes the shape; all elements become zero and any bf16 copy is dropped.
  void resize(std::vector<int64_t> shape) {
    shape_ = std::move(shape);
    data_.assign(count(shape_), 0.0f);
    bf16_.clear();
  }
  // Makes the shape `shape`, reusing the storage (contents unspecified) when
  // it already has it: for activation buffers that every step overwrites.
  void ensure(const std::vector<int64_t>& shape) {
    if (shape_ != shape) resize(shape);
  }

  // The bf16 copy: null when there is none. bf16_storage() sizes it to
  // numel() for the caller to fill; drop_bf16() frees it.
  const uint16_t* bf16() const { return bf16_.empty() ? nullptr : bf16_.data(); }
  uint16_t* bf16_storage() {
    bf16_.resize(data_.size());
    return bf16_.data();
  }
  void drop_bf16() { std::vector<uint16_t>().swap(bf16_); }

  static size_t count(const std::vector<int64_t>& shape) {
    size_t n = 1;
    for (int64_t s : shape) n *= static_cast<size_t>(s);
    return n;
  }

 private:
  std::vector<int64_t> shape_;
  std::vector<float> data_;
  std::vector<uint16_t> bf16_;
};

std::string shape_string(const std::vector<int64_t>& shape);

}  // namespace memoe
