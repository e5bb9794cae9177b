#include "io/safetensors.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>

#include "core/bf16.h"
#include "core/error.h"
#include "io/test_files.h"

namespace memoe {
namespace {

namespace fs = std::filesystem;
using io_testing::read_bytes;
using io_testing::write_bytes;

class SafetensorsTest : public io_testing::TempDirTest {};

std::string le64(uint64_t value) { return io_testing::le_bytes(value, 8); }

// A file assembled by hand: length field, header text, data buffer.
std::string assemble(const std::string& header, const std::string& data) {
  return le64(header.size()) + header + data;
}

template <typename T>
std::string raw(std::initializer_list<T> values) {
  std::string s;
  for (T v : values) s.append(reinterpret_cast<const char*>(&v), sizeof(T));
  return s;
}

TEST_F(SafetensorsTest, Bf16ConversionRoundsToNearestEvenAndKeepsNaN) {
  EXPECT_EQ(float_to_bf16(1.0f), 0x3F80);
  EXPECT_EQ(float_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3F80);      // tie -> even (down)
  EXPECT_EQ(float_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3F82);  // tie -> even (up)
  EXPECT_EQ(float_to_bf16(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20)), 0x3F81);
  EXPECT_EQ(float_to_bf16(-2.0f), 0xC000);
  EXPECT_EQ(float_to_bf16(std::numeric_limits<float>::infinity()), 0x7F80);
  EXPECT_EQ(float_to_bf16(std::numeric_limits<float>::max()), 0x7F80);  // rounds up to inf
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(std::bit_cast<float>(0x7F800001u)))));
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(std::bit_cast<float>(0xFF800001u)))));
  EXPECT_EQ(bf16_to_float(0x4040), 3.0f);
}

TEST_F(SafetensorsTest, F16ConversionIsExact) {
  EXPECT_EQ(f16_to_float(0x3C00), 1.0f);
  EXPECT_EQ(f16_to_float(0xC000), -2.0f);
  EXPECT_EQ(f16_to_float(0x7BFF), 65504.0f);
  EXPECT_EQ(f16_to_float(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(f16_to_float(0x83FF), -std::ldexp(1023.0f, -24));
  EXPECT_TRUE(std::signbit(f16_to_float(0x8000)));
  EXPECT_EQ(f16_to_float(0xFC00), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(f16_to_float(0x7E00)));
}

// A file written by hand, byte by byte, as another implementation would.
TEST_F(SafetensorsTest, ReadsHandBuiltReferenceFile) {
  const std::string header =
      R"({"__metadata__":{"format":"pt"},"h":{"dtype":"F16","shape":[3],"data_offsets":[0,6]},)"
      R"("b":{"dtype":"BF16","shape":[2,1],"data_offsets":[6,10]},"i":{"dtype":"I32","shape":[2],)"
      R"("data_offsets":[10,18]},"f":{"dtype":"F32","shape":[],"data_offsets":[18,22]},)"
      R"("q":{"dtype":"I64","shape":[1],"data_offsets":[22,30]},"e":{"dtype":"F32","shape":[0,4],"data_offsets":[30,30]}})";
  const std::string data = raw<uint16_t>({0x3C00, 0xC000, 0x7BFF}) + raw<uint16_t>({0x3FC0, 0x4040}) +
                           raw<int32_t>({-7, 123456}) + raw<float>({2.5f}) + raw<int64_t>({-(int64_t{1} << 60)});
  write_bytes(file("ref.safetensors"), assemble(header, data));

  const SafetensorsFile f = SafetensorsFile::open(file("ref.safetensors"));
  EXPECT_EQ(f.names(), (std::vector<std::string>{"b", "e", "f", "h", "i", "q"}));
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.info("b").dtype, DType::BF16);
  EXPECT_EQ(f.info("i").begin, 10u);
  EXPECT_EQ(f.info("i").end, 18u);

  const Tensor h = f.read_f32("h");
  ASSERT_EQ(h.shape(), (std::vector<int64_t>{3}));
  EXPECT_EQ(h[0], 1.0f);
  EXPECT_EQ(h[1], -2.0f);
  EXPECT_EQ(h[2], 65504.0f);
  const Tensor b = f.read_f32("b");
  ASSERT_EQ(b.shape(), (std::vector<int64_t>{2, 1}));
  EXPECT_EQ(b[0], 1.5f);
  EXPECT_EQ(b[1], 3.0f);
  EXPECT_EQ(f.read_i64("i"), (std::vector<int64_t>{-7, 123456}));
  const Tensor scalar = f.read_f32("f");
  EXPECT_EQ(scalar.ndim(), 0);
  ASSERT_EQ(scalar.numel(), 1);
  EXPECT_EQ(scalar[0], 2.5f);
  EXPECT_EQ(f.read_i64("q"), (std::vector<int64_t>{-(int64_t{1} << 60)}));
  EXPECT_EQ(f.read_f32("e").numel(), 0);
  EXPECT_EQ(f.read_f32("e").shape(), (std::vector<int64_t>{0, 4}));
  EXPECT_EQ(f.raw_bytes("h").size(), 6u);
}

TEST_F(SafetensorsTest, RoundTripsF32Bf16I64AndMetadata) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  Tensor w({4, 5});
  for (int64_t i = 0; i < w.numel(); ++i) w[i] = normal(rng);
  Tensor wb({3, 7});
  for (int64_t i = 0; i < wb.numel(); ++i) wb[i] = normal(rng) * 1e-3f;
  const std::vector<int64_t> ids = {0, -1, (int64_t{1} << 53) + 1, std::numeric_limits<int64_t>::max(),
                                    std::numeric_limits<int64_t>::min(), 42};

  SafetensorsWriter writer;
  writer.add_f32("model.layers.0.w", w);
  writer.add_f32("model.layers.0.wb", wb, DType::BF16);
  writer.add_i64("model.engram_token_map", {2, 3}, ids.data());
  writer.add_f32("empty", {0}, nullptr);
  writer.set_metadata("step", "1200");
  writer.set_metadata("note", "quote \" and newline \n kept");
  writer.write(file("rt.safetensors"));

  const SafetensorsFile f = SafetensorsFile::open(file("rt.safetensors"));
  EXPECT_TRUE(f.has("model.layers.0.w"));
  EXPECT_FALSE(f.has("model.layers.1.w"));
  EXPECT_EQ(f.names().size(), 4u);
  const Tensor w2 = f.read_f32("model.layers.0.w");
  ASSERT_EQ(w2.shape(), w.shape());
  for (int64_t i = 0; i < w.numel(); ++i) EXPECT_EQ(w2[i], w[i]);

  EXPECT_EQ(f.info("model.layers.0.wb").dtype, DType::BF16);
  const Tensor wb2 = f.read_f32("model.layers.0.wb");
  ASSERT_EQ(wb2.shape(), wb.shape());
  for (int64_t i = 0; i < wb.numel(); ++i) {
    EXPECT_LE(std::fabs(wb2[i] - wb[i]), std::fabs(wb[i]) * std::ldexp(1.0f, -8)) << i;
    EXPECT_EQ(wb2[i], bf16_to_float(float_to_bf16(wb[i])));
  }
  EXPECT_EQ(f.info("model.engram_token_map").shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(f.read_i64("model.engram_token_map"), ids);
  EXPECT_EQ(f.read_f32("empty").numel(), 0);
  EXPECT_EQ(f.metadata().size(), 2u);
  EXPECT_EQ(f.metadata().at("step"), "1200");
  EXPECT_EQ(f.metadata().at("note"), "quote \" and newline \n kept");

  std::vector<float> into(20);
  f.read_f32_into("model.layers.0.w", into.data(), 20);
  EXPECT_EQ(into[19], w[19]);
  EXPECT_THROW(f.read_f32_into("model.layers.0.w", into.data(), 19), Error);
}

TEST_F(SafetensorsTest, WriterLayoutIsAlignedPackedAndSorted) {
  SafetensorsWriter writer;
  const std::vector<float> f3 = {1, 2, 3};
  const std::vector<int64_t> i2 = {1, 2};
  writer.add_f32("c_bf16_odd", {3}, f3.data(), DType::BF16);  // 6 bytes
  writer.add_f32("b_f32", {3}, f3.data());                    // 12 bytes
  writer.add_i64("a_i64", {2}, i2.data());                    // 16 bytes
  writer.add_f32("d_bf16", {1}, f3.data(), DType::BF16);
  writer.write(file("layout.safetensors"));
  const std::string bytes = read_bytes(file("layout.safetensors"));

  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ((8 + n) % 8, 0u);
  const std::string header = bytes.substr(8, n);
  EXPECT_LT(header.find("\"a_i64\""), header.find("\"b_f32\""));
  EXPECT_LT(header.find("\"b_f32\""), header.find("\"c_bf16_odd\""));
  const auto json = nlohmann::json::parse(header);
  uint64_t covered = 0;
  for (const auto& [name, entry] : json.items()) {
    const uint64_t begin = entry["data_offsets"][0], end = entry["data_offsets"][1];
    const uint64_t size = entry["dtype"] == "I64" ? 8 : entry["dtype"] == "F32" ? 4 : 2;
    EXPECT_EQ((8 + n + begin) % size, 0u) << name << " is not aligned to its element size";
    covered += end - begin;
  }
  EXPECT_EQ(covered, 16u + 12u + 6u + 2u);
  EXPECT_EQ(bytes.size(), 8 + n + covered);  // packed: no gaps, nothing after

  // No temporary file is left behind.
  EXPECT_EQ(regular_files(), 1);
}

TEST_F(SafetensorsTest, WriterRefusesBadInput) {
  SafetensorsWriter writer;
  const std::vector<float> x = {1, 2};
  writer.add_f32("x", {2}, x.data());
  EXPECT_THROW(writer.add_f32("x", {2}, x.data()), Error);
  EXPECT_THROW(writer.add_f32("", {2}, x.data()), Error);
  EXPECT_THROW(writer.add_f32("__metadata__", {2}, x.data()), Error);
  EXPECT_THROW(writer.add_f32("neg", {-2}, x.data()), Error);
  EXPECT_THROW(writer.add_f32("i64", {2}, x.data(), DType::I64), Error);
  EXPECT_THROW(writer.add_f32("null", {2}, nullptr), Error);
  EXPECT_THROW(writer.add_i64("huge", {int64_t{1} << 40, int64_t{1} << 40}, nullptr), Error);
  writer.add_f32("null", {2}, x.data());  // a refused name stays free
  try {
    writer.add_f32("x", {2}, x.data());
    FAIL() << "duplicate accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("\"x\""), std::string::npos) << e.what();
  }
}

TEST_F(SafetensorsTest, WriteToUnwritablePathNamesPathAndReason) {
  SafetensorsWriter writer;
  const std::vector<float> x = {1};
  writer.add_f32("x", {1}, x.data());
  const std::string path = file("no/such/dir/x.safetensors");
  try {
    writer.write(path);
    FAIL() << "write succeeded";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "cannot write " + path + ": No such file or directory");
  }
  // The target is a directory: rename fails, and the old contents and no
  // temporary remain.
  fs::create_directories(file("adir"));
  EXPECT_THROW(writer.write(file("adir")), Error);
  EXPECT_TRUE(fs::is_directory(file("adir")));
  EXPECT_EQ(regular_files(), 0);
}

}  // namespace
}  // namespace memoe
