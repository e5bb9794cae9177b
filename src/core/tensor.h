// Tensor: a dense, row-major buffer with a shape; layers take raw pointers
// into it so that kernels stay plain loops.
//
// Its values are fp32, bf16 or both, and either owned or borrowed:
// - owned fp32 (training, and whatever a command computes);
// - owned fp32 plus an owned bf16 copy for mixed-precision products
//   (kernels/linear.h reads the copy when present; whoever changes the
//   values refreshes it, ModelParams::refresh_bf16_copies);
// - a read-only view of memory it does not own, fp32 or bf16 (a
//   memory-mapped checkpoint at inference): `owner` keeps that memory alive
//   for as long as any tensor views it. A bf16 view has no fp32 values
//   (data() is null); kernels read its bf16() and widen in registers.
// A view of device memory would be one more kind of owner; nothing here
// assumes the memory is the process's own. Tensors are contiguous; a kernel
// that reads a part of one (an expert's rows, a head's columns) takes a
// leading dimension, as gemm does, rather than the tensor carrying strides.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <string>
#include <vector>

namespace memoe {

// Tensor memory: calloc'd, so that large blocks are fresh pages the OS
// zeroes on first touch, and elements are left as calloc made them. A tensor
// allocated but never written (one the loader then replaces by a view of
// the file) costs no memory.
template <class T>
struct ZeroedAllocator {
  using value_type = T;
  ZeroedAllocator() = default;
  template <class U>
  ZeroedAllocator(const ZeroedAllocator<U>&) {}
  T* allocate(size_t n) {
    void* p = std::calloc(n, sizeof(T));
    if (!p) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t) { std::free(p); }
  template <class U>
  void construct(U*) noexcept {}  // value-initialisation: calloc already made it zero
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
  bool operator==(const ZeroedAllocator&) const { return true; }
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::vector<int64_t> shape) : shape_(std::move(shape)), numel_(count(shape_)), data_(numel_) {}

  // Read-only views (see above). Writing through data() of a view is a bug;
  // a mapping made read-only turns it into an immediate fault.
  static Tensor view_f32(std::vector<int64_t> shape, const float* values, std::shared_ptr<const void> owner);
  static Tensor view_bf16(std::vector<int64_t> shape, const uint16_t* values, std::shared_ptr<const void> owner);

  // fp32 values; null for a tensor held only in bf16 (a bf16 view).
  float* data() { return view_f32_ ? const_cast<float*>(view_f32_) : data_.data(); }
  const float* data() const { return view_f32_ ? view_f32_ : data_.data(); }
  float& operator[](int64_t i) { return data()[i]; }
  float operator[](int64_t i) const { return data()[i]; }

  int64_t numel() const { return static_cast<int64_t>(numel_); }
  const std::vector<int64_t>& shape() const { return shape_; }
  int64_t dim(size_t i) const { return shape_.at(i); }
  int ndim() const { return static_cast<int>(shape_.size()); }
  bool empty() const { return numel_ == 0; }
  bool is_view() const { return owner_ != nullptr; }
  // Whether it has fp32 values (every tensor but a bf16 view).
  bool has_f32() const { return numel_ == 0 || data() != nullptr; }
  // Bytes of values it owns (views own none): for memory reports.
  size_t owned_bytes() const { return data_.size() * sizeof(float) + bf16_.size() * sizeof(uint16_t); }

  void zero() { std::fill(data_.begin(), data_.end(), 0.0f); }
  // Changes the shape; all elements become zero, owned fp32; any bf16 copy
  // or view is dropped.
  void resize(std::vector<int64_t> shape) {
    *this = Tensor(std::move(shape));
  }
  // Asks the kernel to back this tensor's fp32 values with huge pages (2 MiB,
  // transparent; Debian's default mode grants them to regions that ask), for
  // a large table read at random rows: in 4 KiB pages nearly every row of an
  // Engram table of 1 GiB misses the TLB. Call it before the values are
  // written; best effort (without transparent huge pages nothing changes).
  void advise_huge_pages();
  // Makes the shape `shape`, reusing the storage (contents unspecified) when
  // it already has it: for activation buffers that every step overwrites.
  void ensure(const std::vector<int64_t>& shape) {
    if (shape_ != shape || is_view()) resize(shape);
  }

  // The bf16 values: a bf16 view's own, or the copy beside the fp32 values;
  // null when there are neither. bf16_storage() sizes the copy to numel()
  // for the caller to fill (tensors with fp32 values only); drop_bf16()
  // frees a copy (a bf16 view keeps its values: they are all it has).
  const uint16_t* bf16() const { return view_bf16_ ? view_bf16_ : (bf16_.empty() ? nullptr : bf16_.data()); }
  uint16_t* bf16_storage();
  void drop_bf16() { std::vector<uint16_t>().swap(bf16_); }
  bool has_bf16_copy() const { return !bf16_.empty(); }

  static size_t count(const std::vector<int64_t>& shape) {
    size_t n = 1;
    for (int64_t s : shape) n *= static_cast<size_t>(s);
    return n;
  }

 private:
  // A view's shape and owner, its values still to be set.
  static Tensor shaped_view(std::vector<int64_t> shape, std::shared_ptr<const void> owner);

  std::vector<int64_t> shape_;
  size_t numel_ = 0;
  std::vector<float, ZeroedAllocator<float>> data_;
  std::vector<uint16_t> bf16_;
  const float* view_f32_ = nullptr;
  const uint16_t* view_bf16_ = nullptr;
  std::shared_ptr<const void> owner_;
};

std::string shape_string(const std::vector<int64_t>& shape);

}  // namespace memoe
