// Tensor storage (core/tensor.h): owned fp32, a bf16 copy beside it, and
// read-only views of memory owned elsewhere.
#include "core/tensor.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <vector>

namespace memoe {
namespace {

// Resident pages of this process, from /proc/self/statm.
long resident_pages() {
  std::ifstream statm("/proc/self/statm");
  long size = 0, resident = 0;
  statm >> size >> resident;
  return resident;
}

TEST(Tensor, ViewsBorrowTheirValuesAndKeepTheOwnerAlive) {
  auto owner = std::make_shared<std::vector<float>>(std::vector<float>{1, 2, 3, 4, 5, 6});
  const float* values = owner->data();
  Tensor t = Tensor::view_f32({2, 3}, values, owner);
  std::weak_ptr<std::vector<float>> watch = owner;
  owner.reset();
  EXPECT_FALSE(watch.expired());  // the view holds it
  EXPECT_TRUE(t.is_view());
  EXPECT_TRUE(t.has_f32());
  EXPECT_EQ(t.data(), values);
  EXPECT_EQ(t.numel(), 6);
  EXPECT_EQ(t[4], 5.0f);
  EXPECT_EQ(t.owned_bytes(), 0u);
  Tensor copy = t;  // copies share the borrowed memory
  EXPECT_EQ(copy.data(), values);
  t = Tensor();
  copy = Tensor();
  EXPECT_TRUE(watch.expired());
}

TEST(Tensor, Bf16ViewsHaveNoFp32ValuesAndNoRoomForACopy) {
  auto owner = std::make_shared<std::vector<uint16_t>>(std::vector<uint16_t>{0x3f80, 0x4000});  // 1, 2
  Tensor t = Tensor::view_bf16({2}, owner->data(), owner);
  EXPECT_FALSE(t.has_f32());
  EXPECT_EQ(t.data(), nullptr);
  EXPECT_EQ(t.bf16(), owner->data());
  EXPECT_FALSE(t.has_bf16_copy());
  t.drop_bf16();  // a view's values are all it has: they stay
  EXPECT_EQ(t.bf16(), owner->data());
  EXPECT_ANY_THROW(t.bf16_storage());
}

TEST(Tensor, EnsureAndResizeTurnAViewIntoOwnedZeros) {
  auto owner = std::make_shared<std::vector<float>>(4, 7.0f);
  Tensor t = Tensor::view_f32({4}, owner->data(), owner);
  t.ensure({4});  // same shape, but a view cannot be overwritten
  EXPECT_FALSE(t.is_view());
  EXPECT_NE(t.data(), owner->data());
  t[0] = 1.0f;
  EXPECT_EQ((*owner)[0], 7.0f);
  t.resize({2, 2});
  EXPECT_EQ(t[0], 0.0f);
}

TEST(Tensor, ABf16CopySitsBesideTheFp32Values) {
  Tensor t({3});
  EXPECT_EQ(t.bf16(), nullptr);
  uint16_t* copy = t.bf16_storage();
  copy[0] = 0x3f80;
  EXPECT_TRUE(t.has_bf16_copy());
  EXPECT_TRUE(t.has_f32());
  EXPECT_EQ(t.owned_bytes(), 3 * sizeof(float) + 3 * sizeof(uint16_t));
  t.drop_bf16();
  EXPECT_EQ(t.bf16(), nullptr);
}

// A large tensor is zero without its pages being touched, so one that the
// loader replaces by a view of the file never costs memory.
TEST(Tensor, LargeTensorsAreZeroWithoutTouchingTheirPages) {
  const long before = resident_pages();
  Tensor t({64, 1 << 20});  // 256 MiB
  const long after = resident_pages();
  const long page = sysconf(_SC_PAGESIZE);
  EXPECT_LT((after - before) * page, 16L << 20) << "allocation touched the tensor's memory";
  EXPECT_EQ(t[0], 0.0f);
  EXPECT_EQ(t[t.numel() - 1], 0.0f);
  EXPECT_EQ(t[t.numel() / 2 + 12345], 0.0f);
}

}  // namespace
}  // namespace memoe
