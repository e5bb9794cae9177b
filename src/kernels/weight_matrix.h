// A weight matrix as the kernels read it: fp32 values, bf16 values, or both
// (fp32 values with a bf16 copy for mixed-precision products). Products
// (kernels/linear.h) run in bf16 whenever there are bf16 values; gathers and
// the other readers take the fp32 values when there are any (exact) and
// widen the bf16 ones in registers otherwise, so a bf16 checkpoint is read
// in place, never converted in memory.
#pragma once
#include <cstdint>
#include <cstring>

#include "core/bf16.h"
#include "core/tensor.h"

namespace memoe {

struct WeightMatrix {
  WeightMatrix(const float* values) : f32(values) {}
  WeightMatrix(const Tensor& t) : f32(t.has_f32() ? t.data() : nullptr), bf16(t.bf16()) {}
  static WeightMatrix bf16_only(const uint16_t* values) {
    WeightMatrix w(static_cast<const float*>(nullptr));
    w.bf16 = values;
    return w;
  }
  const float* f32;
  const uint16_t* bf16 = nullptr;

  // Value i as fp32.
  float at(int64_t i) const { return f32 ? f32[i] : bf16_to_float(bf16[i]); }
  // Where element `first` lies (for reading ahead).
  const void* address(int64_t first) const {
    return f32 ? static_cast<const void*>(f32 + first) : static_cast<const void*>(bf16 + first);
  }
  // out[0..width) = the row starting at element `first`, as fp32.
  void copy_row(int64_t first, int64_t width, float* out) const {
    if (f32) {
      std::memcpy(out, f32 + first, sizeof(float) * static_cast<size_t>(width));
      return;
    }
    const uint16_t* src = bf16 + first;
    for (int64_t j = 0; j < width; ++j) out[j] = bf16_to_float(src[j]);
  }
};

}  // namespace memoe
