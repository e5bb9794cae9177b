// The safetensors reader against malformed files: every one must give a
// memoe::Error (one line, naming the file), never a crash or a wrong read.
// Run under ASan/UBSan to catch out-of-bounds reads.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "core/error.h"
#include "io/safetensors.h"
#include "io/test_files.h"

namespace memoe {
namespace {

using io_testing::read_bytes;
using io_testing::write_bytes;

class SafetensorsReaderErrorsTest : public io_testing::TempDirTest {};

std::string assemble(const std::string& header, const std::string& data) {
  return io_testing::le_bytes(header.size(), 8) + header + data;
}

// Opens the file and reads every tensor the way a loader would.
void load_everything(const std::string& path) {
  const SafetensorsFile f = SafetensorsFile::open(path);
  for (const std::string& name : f.names()) {
    const DType t = f.info(name).dtype;
    if (t == DType::F32 || t == DType::BF16 || t == DType::F16 || t == DType::F64) {
      const Tensor x = f.read_f32(name);
      volatile float sink = 0;
      for (int64_t i = 0; i < x.numel(); ++i) sink = sink + x[i];
    } else if (t == DType::I64 || t == DType::I32) {
      (void)f.read_i64(name);
    } else {
      (void)f.raw_bytes(name);
    }
  }
}

// The error message load_everything gives, or "" if it succeeds.
std::string load_error(const std::string& path) {
  try {
    load_everything(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::string small_valid_file(const std::string& path) {
  SafetensorsWriter w;
  const std::vector<float> w_data = {1, 2, 3, 4, 5, 6}, b_data = {0.5f, -1.5f, 8.0f};
  const std::vector<int64_t> ids = {7, -9};
  w.add_f32("w", {2, 3}, w_data.data());
  w.add_f32("b", {3}, b_data.data(), DType::BF16);
  w.add_i64("ids", {2}, ids.data());
  w.set_metadata("format", "pt");
  w.write(path);
  return read_bytes(path);
}

const std::string kData8 = "ABCDEFGH";  // not whitespace, so it cannot pass as header padding

TEST_F(SafetensorsReaderErrorsTest, MalformedHeadersAreRefused) {
  const std::string ok = R"("t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  const std::string nested = std::string(40, '[') + std::string(40, ']');
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", kData8},
      {"    ", kData8},
      {"[]", kData8},
      {"\"x\"", kData8},
      {"null", kData8},
      {"{" + ok, kData8},
      {"{" + ok + "}x", kData8},
      {"{\"t\":[1,2]}", kData8},
      {R"({"t":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}})", kData8},
      {R"({"t":{"dtype":5,"shape":[2],"data_offsets":[0,8]}})", kData8},
      {R"({"t":{"shape":[2],"data_offsets":[0,8]}})", kData8},
      {R"({"t":{"dtype":"F32","data_offsets":[0,8]}})", kData8},
      {R"({"t":{"dtype":"F32","shape":"2","data_offsets":[0,8]}})", kData8},
      {R"({"t":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", kData8},
      {R"({"t":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", kData8},
      {R"({"t":{"dtype":"F32","shape":[true],"data_offsets":[0,8]}})", kData8},
      {R"({"t":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}})", kData8},
      {R"({"t":{"dtype":"F32","shape":[9223372036854775807,2],"data_offsets":[0,8]}})", kData8},
      {R"({"t":{"dtype":"F32","shape":[18446744073709551615],"data_offsets":[0,8]}})", kData8},
      {R"({"t":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,8]}})", kData8},
      {R"({"t":{"dtype":"F32","shape":[2]}})", kData8},
      {R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", kData8},
      {R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8,16]}})", kData8},
      {R"({"t":{"dtype":"F32","shape":[2],"data_offsets":{"a":0}}})", kData8},
      {R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", kData8},
      {R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}})", kData8},
      {R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", kData8},
      {R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", kData8},
      {R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0,8]}})", kData8},
      {R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}})", kData8},
      {R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0.0,8]}})", kData8},
      {R"({"t":{"dtype":"F32","shape":[2],"data_offsets":["0","8"]}})", kData8},
      {R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,18446744073709551615]}})", kData8},
      {R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[18446744073709551608,0]}})", kData8},
      {R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[18446744073709551615,7]}})", kData8},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
       kData8 + kData8},
      {R"({"a":{"dtype":"I64","shape":[2],"data_offsets":[0,16]},"b":{"dtype":"U8","shape":[1],"data_offsets":[15,16]}})",
       kData8 + kData8},
      {"{" + ok + "," + ok + "}", kData8},
      {R"({"t":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}})", kData8},
      {R"({"__metadata__":"pt",)" + ok + "}", kData8},
      {R"({"__metadata__":{"format":1},)" + ok + "}", kData8},
      {R"({"__metadata__":{"a":)" + nested + "}," + ok + "}", kData8},
      {"{\"\xff\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", kData8},
  };
  int index = 0;
  for (const auto& [header, data] : cases) {
    const std::string path = file("case" + std::to_string(index++) + ".safetensors");
    write_bytes(path, assemble(header, data));
    const std::string message = load_error(path);
    EXPECT_FALSE(message.empty()) << "accepted header: " << header;
    EXPECT_EQ(message.find(path), 0u) << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  }
}

TEST_F(SafetensorsReaderErrorsTest, BadLengthFieldsAreRefused) {
  const std::string header = R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  const std::string body = header + kData8;
  const std::vector<std::string> files = {
      "",
      std::string(7, '\0'),
      io_testing::le_bytes(uint64_t{1} << 63, 8) + body,
      io_testing::le_bytes(~uint64_t{0}, 8) + body,
      io_testing::le_bytes(~uint64_t{0} - 7, 8) + body,
      io_testing::le_bytes(200ull << 20, 8) + body,       // absurd, though the file is small
      io_testing::le_bytes(body.size() + 1, 8) + body,    // one past the end
      io_testing::le_bytes(header.size() - 1, 8) + body,  // cuts the JSON short
  };
  for (size_t i = 0; i < files.size(); ++i) {
    const std::string path = file("len" + std::to_string(i));
    write_bytes(path, files[i]);
    EXPECT_THROW(load_everything(path), Error) << "case " << i;
  }
  // The exact fit still loads.
  write_bytes(file("fit"), io_testing::le_bytes(header.size(), 8) + body);
  EXPECT_NO_THROW(load_everything(file("fit")));
}

TEST_F(SafetensorsReaderErrorsTest, EveryTruncationIsRefused) {
  const std::string valid = small_valid_file(file("valid.safetensors"));
  ASSERT_NO_THROW(load_everything(file("valid.safetensors")));
  const std::string path = file("cut.safetensors");
  for (size_t size = 0; size < valid.size(); ++size) {
    write_bytes(path, valid.substr(0, size));
    EXPECT_THROW(load_everything(path), Error) << "prefix of " << size << " bytes loaded";
  }
}

TEST_F(SafetensorsReaderErrorsTest, FlippedHeaderBytesAreRefused) {
  const std::string valid = small_valid_file(file("valid.safetensors"));
  uint64_t header_size = 0;
  std::memcpy(&header_size, valid.data(), 8);
  const std::string path = file("flipped.safetensors");
  // Every byte of the length field and the header, inverted: the result is
  // never valid JSON (a lone byte >= 0x80 is not UTF-8) or has a wrong length.
  for (size_t i = 0; i < 8 + header_size; ++i) {
    std::string bytes = valid;
    bytes[i] = static_cast<char>(~bytes[i]);
    write_bytes(path, bytes);
    EXPECT_THROW(load_everything(path), Error) << "flipped byte " << i << " loaded";
  }
  // Flipping data bytes changes values, not validity.
  std::string bytes = valid;
  bytes[8 + header_size] = static_cast<char>(~bytes[8 + header_size]);
  write_bytes(path, bytes);
  EXPECT_NO_THROW(load_everything(path));
}

TEST_F(SafetensorsReaderErrorsTest, RandomMutationsNeverCrash) {
  const std::string valid = small_valid_file(file("valid.safetensors"));
  const std::string path = file("mutated.safetensors");
  std::mt19937 rng(1234);
  const char interesting[] = "0123456789-.,:[]{}\" e";
  int refused = 0;
  for (int trial = 0; trial < 1500; ++trial) {
    std::string bytes = valid;
    const int edits = 1 + static_cast<int>(rng() % 3);
    for (int e = 0; e < edits; ++e) {
      const size_t at = rng() % bytes.size();
      bytes[at] = rng() % 2 ? interesting[rng() % (sizeof(interesting) - 1)] : static_cast<char>(rng());
    }
    write_bytes(path, bytes);
    try {
      load_everything(path);
    } catch (const Error&) {
      ++refused;
    } catch (const std::exception& other) {
      ADD_FAILURE() << "trial " << trial << " threw a non-memoe exception: " << other.what();
    }
  }
  EXPECT_GT(refused, 0);
}

TEST_F(SafetensorsReaderErrorsTest, HostileNamesStayOnOneLine) {
  write_bytes(file("nl"), assemble(R"({"a\nb":{"dtype":"F99","shape":[],"data_offsets":[0,0]}})", ""));
  const std::string message = load_error(file("nl"));
  EXPECT_NE(message.find("\"a\\nb\""), std::string::npos) << message;
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
}

// Dtypes the format defines but the engine does not convert still open.
TEST_F(SafetensorsReaderErrorsTest, UnconvertedDtypesOpenButRefuseConversion) {
  write_bytes(file("fp8"),
              assemble(R"({"q":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[0,4]},"u":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})",
                       kData8));
  const SafetensorsFile f = SafetensorsFile::open(file("fp8"));
  EXPECT_EQ(f.info("q").dtype, DType::F8_E4M3);
  EXPECT_EQ(f.raw_bytes("u")[0], 'E');
  EXPECT_THROW(f.read_f32("q"), Error);
  EXPECT_THROW(f.read_i64("u"), Error);
}

TEST_F(SafetensorsReaderErrorsTest, MissingTensorAndWrongTypeNameTheTensor) {
  small_valid_file(file("s.safetensors"));
  const SafetensorsFile f = SafetensorsFile::open(file("s.safetensors"));
  auto message = [&](auto&& call) -> std::string {
    try {
      call();
    } catch (const Error& e) {
      return e.what();
    }
    return "no error";
  };
  const std::string missing = message([&] { f.read_f32("model.nope"); });
  EXPECT_NE(missing.find("model.nope"), std::string::npos) << missing;
  EXPECT_NE(missing.find(file("s.safetensors")), std::string::npos) << missing;
  const std::string as_float = message([&] { f.read_f32("ids"); });
  EXPECT_NE(as_float.find("\"ids\""), std::string::npos) << as_float;
  EXPECT_NE(as_float.find("I64"), std::string::npos) << as_float;
  const std::string as_int = message([&] { f.read_i64("w"); });
  EXPECT_NE(as_int.find("\"w\""), std::string::npos) << as_int;
  EXPECT_THROW(f.info("missing"), Error);
  EXPECT_THROW(SafetensorsFile::open(file("absent.safetensors")), Error);
  EXPECT_THROW(SafetensorsFile::open(dir_.string()), Error);
}

}  // namespace
}  // namespace memoe
