#include "io/npy.h"

#include <gtest/gtest.h>

#include <cstring>
#include <limits>

#include "core/error.h"
#include "io/test_files.h"

namespace memoe {
namespace {

using io_testing::read_bytes;
using io_testing::write_bytes;

class NpyTest : public io_testing::TempDirTest {};

// A .npy file assembled by hand: magic, version, length, header, data.
std::string npy_bytes(const std::string& header, const std::string& data, int major = 1) {
  std::string s = std::string("\x93NUMPY", 6) + static_cast<char>(major) + '\0';
  s += io_testing::le_bytes(header.size(), major == 1 ? 2 : 4);
  return s + header + data;
}

template <typename T>
std::string raw(std::initializer_list<T> values) {
  std::string s;
  for (T v : values) s.append(reinterpret_cast<const char*>(&v), sizeof(T));
  return s;
}

std::string read_error(const std::string& path) {
  try {
    const NpyArray a = read_npy(path);
    (void)a.to_f64();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST_F(NpyTest, RoundTripsF32AcrossShapes) {
  const std::vector<float> data = {1.5f, -2.25f, 3e-30f, std::numeric_limits<float>::max(), 0.0f, -0.0f};
  const std::vector<std::vector<int64_t>> shapes = {{}, {6}, {2, 3}, {1, 2, 3}, {0, 5}};
  for (const auto& shape : shapes) {
    const std::string path = file("a.npy");
    write_npy_f32(path, shape, data.data());
    const NpyArray a = read_npy(path);
    EXPECT_EQ(a.dtype, NpyDType::F32);
    EXPECT_EQ(a.shape, shape);
    const Tensor t = a.to_tensor();
    ASSERT_EQ(t.shape(), shape);
    for (int64_t i = 0; i < t.numel(); ++i) EXPECT_EQ(t[i], data[static_cast<size_t>(i)]);
    // numpy's layout: the data starts 64-byte aligned, after a '\n'.
    const std::string bytes = read_bytes(path);
    const size_t data_start = bytes.size() - static_cast<size_t>(t.numel()) * 4;
    EXPECT_EQ(data_start % 64, 0u);
    EXPECT_EQ(bytes[data_start - 1], '\n');
  }
  EXPECT_EQ(regular_files(), 1);  // no temporaries left behind
}

TEST_F(NpyTest, RoundTripsI64Exactly) {
  const std::vector<int64_t> ids = {std::numeric_limits<int64_t>::min(), -1, (int64_t{1} << 53) + 1,
                                    std::numeric_limits<int64_t>::max()};
  write_npy_i64(file("i.npy"), {2, 2}, ids.data());
  const NpyArray a = read_npy(file("i.npy"));
  EXPECT_EQ(a.dtype, NpyDType::I64);
  EXPECT_EQ(a.to_i64(), ids);
}

// Bytes exactly as numpy 1.24 writes np.arange(6, dtype='<f4').reshape(2, 3).
TEST_F(NpyTest, ReadsNumpyWrittenFile) {
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  header += std::string(117 - header.size(), ' ') + "\n";
  write_bytes(file("np.npy"), npy_bytes(header, raw<float>({0, 1, 2, 3, 4, 5})));
  const NpyArray a = read_npy(file("np.npy"));
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a.to_f64(), (std::vector<double>{0, 1, 2, 3, 4, 5}));
  EXPECT_THROW(a.to_i64(), Error);
}

TEST_F(NpyTest, ReadsOtherDtypesAndVersions) {
  write_bytes(file("f8.npy"), npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }\n",
                                        raw<double>({1.5, -1e300}), 2));
  const NpyArray f8 = read_npy(file("f8.npy"));
  EXPECT_EQ(f8.dtype, NpyDType::F64);
  EXPECT_EQ(f8.to_f64(), (std::vector<double>{1.5, -1e300}));

  // Python-2 style: double quotes, 'L' suffixes, other key order, version 3.
  write_bytes(file("i4.npy"), npy_bytes("{\"shape\": (3L,), \"fortran_order\": False, \"descr\": \"<i4\"}",
                                        raw<int32_t>({-5, 0, 7}), 3));
  const NpyArray i4 = read_npy(file("i4.npy"));
  EXPECT_EQ(i4.dtype, NpyDType::I32);
  EXPECT_EQ(i4.to_i64(), (std::vector<int64_t>{-5, 0, 7}));
  EXPECT_EQ(i4.to_tensor()[0], -5.0f);

  write_bytes(file("i8.npy"), npy_bytes("{'descr':'<i8','fortran_order':False,'shape':()}", raw<int64_t>({42})));
  EXPECT_EQ(read_npy(file("i8.npy")).to_i64(), (std::vector<int64_t>{42}));
}

TEST_F(NpyTest, MalformedFilesAreRefused) {
  const std::string d8 = raw<float>({1, 2});
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", ""},
      {"NUMPY", ""},
      {std::string("\x93NUMPX\x01\x00\x10\x00", 10) + "{}", ""},  // bad magic
      {std::string("\x93NUMPY\x04\x00\x02\x00{}", 12), ""},      // unknown version
      {std::string("\x93NUMPY\x01\x00\xff\x00{}", 12), ""},      // length past the end
      {std::string("\x93NUMPY\x02\x00\x02\x00", 10), ""},        // v2 length cut short
      {npy_bytes("{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }", d8), "Fortran"},
      {npy_bytes("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", d8), "big-endian"},
      {npy_bytes("{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }", d8), "<c8"},
      {npy_bytes("{'descr': '|u1', 'fortran_order': False, 'shape': (8,), }", d8), "|u1"},
      {npy_bytes("{'descr': '<f4', 'shape': (2,), }", d8), "lacks"},
      {npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}", d8), "'x'"},
      {npy_bytes("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}", d8), "twice"},
      {npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2)}", d8), "tuple"},
      {npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (-2,)}", d8), "negative"},
      {npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': [2]}", d8), ""},
      {npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2.5)}", d8), ""},
      {npy_bytes("{'descr': '<f4', 'fortran_order': 0, 'shape': (2,)}", d8), "fortran_order"},
      {npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}", d8), "overflow"},
      {npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296)}", d8), "overflow"},
      {npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (3,)}", d8), "truncated"},
      {npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (1,)}", d8), "after the data"},
      {npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2,)} x", d8), "trailing"},
      {npy_bytes("{'descr': '<f4, 'fortran_order': False, 'shape': (2,)}", d8), ""},
      {npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2,)", d8), ""},
      {npy_bytes("'descr': '<f4', 'fortran_order': False, 'shape': (2,)}", d8), ""},
      {npy_bytes("{'descr': '<\\f4', 'fortran_order': False, 'shape': (2,)}", d8), ""},
  };
  int index = 0;
  for (const auto& [bytes, expected] : cases) {
    const std::string path = file("bad" + std::to_string(index++) + ".npy");
    write_bytes(path, bytes);
    const std::string message = read_error(path);
    EXPECT_FALSE(message.empty()) << "accepted case " << index - 1;
    EXPECT_EQ(message.find(path), 0u) << message;
    EXPECT_NE(message.find(expected), std::string::npos) << "case " << index - 1 << ": " << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  }
  EXPECT_THROW(read_npy(file("absent.npy")), Error);
  EXPECT_THROW(read_npy(dir_.string()), Error);
}

TEST_F(NpyTest, EveryTruncationAndHeaderFlipIsRefused) {
  const std::vector<float> data = {1, 2, 3, 4, 5, 6};
  write_npy_f32(file("v.npy"), {2, 3}, data.data());
  const std::string valid = read_bytes(file("v.npy"));
  const std::string path = file("bad.npy");
  for (size_t size = 0; size < valid.size(); ++size) {
    write_bytes(path, valid.substr(0, size));
    EXPECT_THROW(read_npy(path), Error) << "prefix of " << size << " bytes loaded";
  }
  // Inverting any byte before the header's padding breaks the file.
  const size_t padding = valid.find(", }") + 3;
  for (size_t i = 0; i < padding; ++i) {
    std::string bytes = valid;
    bytes[i] = static_cast<char>(~bytes[i]);
    write_bytes(path, bytes);
    EXPECT_THROW(read_npy(path), Error) << "flipped byte " << i << " loaded";
  }
}

TEST_F(NpyTest, WriteToUnwritablePathNamesPathAndReason) {
  const float x = 1.0f;
  const std::string path = file("no/such/dir/x.npy");
  try {
    write_npy_f32(path, {1}, &x);
    FAIL() << "write succeeded";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "cannot write " + path + ": No such file or directory");
  }
  EXPECT_THROW(write_npy_f32(file("neg.npy"), {-1}, &x), Error);
  EXPECT_THROW(write_npy_f32(file("null.npy"), {1}, nullptr), Error);
  EXPECT_EQ(regular_files(), 0);
}

}  // namespace
}  // namespace memoe
