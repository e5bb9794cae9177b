#include "core/tensor.h"

#include <sys/mman.h>

#include <cstdint>

#include "core/error.h"

namespace memoe {

void Tensor::advise_huge_pages() {
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  if (data_.empty()) return;
  const uintptr_t at = reinterpret_cast<uintptr_t>(data_.data());
  const uintptr_t begin = (at + kHuge - 1) & ~(kHuge - 1), end = (at + data_.size() * sizeof(float)) & ~(kHuge - 1);
  if (end > begin) (void)::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
}

Tensor Tensor::view_f32(std::vector<int64_t> shape, const float* values, std::shared_ptr<const void> owner) {
  Tensor t = shaped_view(std::move(shape), std::move(owner));
  t.view_f32_ = values;
  return t;
}

Tensor Tensor::view_bf16(std::vector<int64_t> shape, const uint16_t* values, std::shared_ptr<const void> owner) {
  Tensor t = shaped_view(std::move(shape), std::move(owner));
  t.view_bf16_ = values;
  return t;
}

Tensor Tensor::shaped_view(std::vector<int64_t> shape, std::shared_ptr<const void> owner) {
  Tensor t;
  t.shape_ = std::move(shape);
  t.numel_ = count(t.shape_);
  t.owner_ = std::move(owner);
  return t;
}

uint16_t* Tensor::bf16_storage() {
  // A bf16 view's values are its own and read-only: nothing to copy into.
  MEMOE_CHECK(!view_bf16_, "internal: a bf16 view has no room for a bf16 copy");
  bf16_.resize(numel_);
  return bf16_.data();
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace memoe
