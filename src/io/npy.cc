#include "io/npy.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstring>
#include <system_error>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/format_util.h"

namespace memoe {

static_assert(std::endian::native == std::endian::little, ".npy data is read as little-endian");

namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicSize = 6;
constexpr size_t kAlign = 64;  // numpy aligns the data start to 64 bytes

size_t item_size(NpyDType dtype) {
  return dtype == NpyDType::F64 || dtype == NpyDType::I64 ? 8 : 4;
}

std::vector<uint8_t> read_whole_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("cannot open ", path, ": ", os_reason(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("cannot open ", path, ": not a regular file");
  }
  std::vector<uint8_t> bytes(static_cast<size_t>(st.st_size));
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::read(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = n < 0 ? errno : 0;
      ::close(fd);
      fail("cannot read ", path, ": ", err ? os_reason(err) : "file shrank while reading");
    }
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  return bytes;
}

// Parses the header, a Python dict literal such as
//   {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
// accepting exactly what numpy writes (any key order, either quote style,
// trailing commas) and nothing it would not.
class HeaderParser {
 public:
  HeaderParser(const std::string& path, std::string text) : path_(path), text_(std::move(text)) {}

  void parse(NpyArray& array) {
    bool have_descr = false, have_order = false, have_shape = false;
    skip_space();
    expect('{');
    while (true) {
      skip_space();
      if (peek() == '}') break;
      const std::string key = parse_string();
      skip_space();
      expect(':');
      skip_space();
      if (key == "descr") {
        MEMOE_CHECK(!have_descr, path_, ": .npy header has 'descr' twice");
        have_descr = true;
        array.dtype = parse_descr(parse_string());
      } else if (key == "fortran_order") {
        MEMOE_CHECK(!have_order, path_, ": .npy header has 'fortran_order' twice");
        have_order = true;
        MEMOE_CHECK(!parse_bool(), path_, ": .npy array is in Fortran order; only C order is supported");
      } else if (key == "shape") {
        MEMOE_CHECK(!have_shape, path_, ": .npy header has 'shape' twice");
        have_shape = true;
        array.shape = parse_shape();
      } else {
        fail(path_, ": .npy header has unexpected key '", key, "'");
      }
      skip_space();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      skip_space();
      MEMOE_CHECK(peek() == '}', path_, ": .npy header: expected ',' or '}' at offset ", pos_);
    }
    ++pos_;
    skip_space();
    MEMOE_CHECK(pos_ == text_.size(), path_, ": .npy header has trailing text after the dict");
    MEMOE_CHECK(have_descr && have_order && have_shape, path_,
                ": .npy header lacks one of 'descr', 'fortran_order', 'shape'");
  }

 private:
  char peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }
  void skip_space() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t' || text_[pos_] == '\n' || text_[pos_] == '\r'))
      ++pos_;
  }
  void expect(char c) {
    MEMOE_CHECK(peek() == c, path_, ": .npy header: expected '", c, "' at offset ", pos_);
    ++pos_;
  }
  std::string parse_string() {
    const char quote = peek();
    MEMOE_CHECK(quote == '\'' || quote == '"', path_, ": .npy header: expected a string at offset ", pos_);
    const size_t end = text_.find(quote, pos_ + 1);
    MEMOE_CHECK(end != std::string::npos, path_, ": .npy header: unterminated string");
    std::string value = text_.substr(pos_ + 1, end - pos_ - 1);
    MEMOE_CHECK(value.find('\\') == std::string::npos, path_, ": .npy header: escapes are not supported");
    pos_ = end + 1;
    return value;
  }
  bool parse_bool() {
    if (text_.compare(pos_, 4, "True") == 0) {
      pos_ += 4;
      return true;
    }
    if (text_.compare(pos_, 5, "False") == 0) {
      pos_ += 5;
      return false;
    }
    fail(path_, ": .npy header: fortran_order is not True or False");
  }
  NpyDType parse_descr(const std::string& descr) {
    if (descr == "<f4") return NpyDType::F32;
    if (descr == "<f8") return NpyDType::F64;
    if (descr == "<i4") return NpyDType::I32;
    if (descr == "<i8") return NpyDType::I64;
    MEMOE_CHECK(descr.empty() || descr[0] != '>', path_, ": .npy dtype '", descr,
                "' is big-endian; only little-endian is supported");
    fail(path_, ": .npy dtype '", descr, "' is not supported (only <f4, <f8, <i4, <i8)");
  }
  std::vector<int64_t> parse_shape() {
    expect('(');
    std::vector<int64_t> shape;
    bool trailing_comma = false;
    uint64_t numel = 1;
    while (true) {
      skip_space();
      if (peek() == ')') break;
      MEMOE_CHECK(peek() != '-', path_, ": .npy shape has a negative extent");
      MEMOE_CHECK(peek() >= '0' && peek() <= '9', path_, ": .npy header: expected an integer at offset ", pos_);
      uint64_t extent = 0;
      while (peek() >= '0' && peek() <= '9') {
        const uint64_t digit = static_cast<uint64_t>(peek() - '0');
        MEMOE_CHECK(extent <= (static_cast<uint64_t>(INT64_MAX) - digit) / 10, path_, ": .npy shape extent overflows");
        extent = extent * 10 + digit;
        ++pos_;
      }
      if (peek() == 'L') ++pos_;  // Python 2 era writers
      MEMOE_CHECK(!__builtin_mul_overflow(numel, extent, &numel) && numel <= static_cast<uint64_t>(INT64_MAX),
                  path_, ": .npy shape overflows 64 bits");
      shape.push_back(static_cast<int64_t>(extent));
      skip_space();
      trailing_comma = peek() == ',';
      if (trailing_comma) {
        ++pos_;
        continue;
      }
      MEMOE_CHECK(peek() == ')', path_, ": .npy header: expected ',' or ')' in shape at offset ", pos_);
    }
    ++pos_;
    // In Python "(3)" is the integer 3, not a tuple.
    MEMOE_CHECK(shape.size() != 1 || trailing_comma, path_, ": .npy shape is not a tuple");
    return shape;
  }

  const std::string& path_;
  std::string text_;
  size_t pos_ = 0;
};

std::string shape_tuple(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + (shape.size() == 1 ? ",)" : ")");
}

void write_npy(const std::string& path, NpyDType dtype, const std::vector<int64_t>& shape, const void* data) {
  uint64_t numel = 1;
  for (int64_t extent : shape) {
    MEMOE_CHECK(extent >= 0, "cannot write ", path, ": negative shape ", shape_string(shape));
    MEMOE_CHECK(!__builtin_mul_overflow(numel, static_cast<uint64_t>(extent), &numel), "cannot write ", path,
                ": shape ", shape_string(shape), " overflows");
  }
  uint64_t nbytes = 0;
  MEMOE_CHECK(!__builtin_mul_overflow(numel, item_size(dtype), &nbytes), "cannot write ", path, ": shape ",
              shape_string(shape), " overflows");
  MEMOE_CHECK(nbytes == 0 || data, "cannot write ", path, ": no data");

  std::string header = std::string("{'descr': '") + npy_descr(dtype) + "', 'fortran_order': False, 'shape': " +
                       shape_tuple(shape) + ", }";
  // Pad with spaces and end with '\n' so the data starts 64-byte aligned.
  const size_t prefix = kMagicSize + 2 + 2;
  header.append(kAlign - (prefix + header.size() + 1) % kAlign, ' ');
  header += '\n';
  MEMOE_CHECK(header.size() <= 65535, "cannot write ", path, ": .npy header too long for format 1.0");

  std::string start(kMagic, kMagicSize);
  start += '\x01';
  start += '\x00';
  start += static_cast<char>(header.size() & 0xff);
  start += static_cast<char>(header.size() >> 8);
  AtomicFileWriter out(path);
  out.write(start);
  out.write(header);
  out.write(data, static_cast<size_t>(nbytes));
  out.commit();
}

// Guards the accessors against an NpyArray assembled by hand inconsistently.
void check_consistent(const NpyArray& array) {
  MEMOE_CHECK(array.bytes.size() == Tensor::count(array.shape) * item_size(array.dtype), array.path,
              ": .npy array holds ", array.bytes.size(), " bytes, not what shape ", shape_string(array.shape),
              " of ", npy_descr(array.dtype), " needs");
}

}  // namespace

const char* npy_descr(NpyDType dtype) {
  switch (dtype) {
    case NpyDType::F32: return "<f4";
    case NpyDType::F64: return "<f8";
    case NpyDType::I32: return "<i4";
    case NpyDType::I64: return "<i8";
  }
  return "?";
}

NpyArray read_npy(const std::string& path) {
  const std::vector<uint8_t> file = read_whole_file(path);
  MEMOE_CHECK(file.size() >= kMagicSize + 4, path, ": file is ", file.size(), " bytes, too short for .npy");
  MEMOE_CHECK(std::memcmp(file.data(), kMagic, kMagicSize) == 0, path, ": not a .npy file (bad magic)");
  const uint8_t major = file[kMagicSize], minor = file[kMagicSize + 1];
  MEMOE_CHECK((major >= 1 && major <= 3) && minor == 0, path, ": unsupported .npy version ", int(major), ".",
              int(minor));
  size_t header_start = kMagicSize + 4;
  uint64_t header_size = load_le<uint16_t>(file.data() + kMagicSize + 2);
  if (major >= 2) {  // 2.0 and 3.0 use a 4-byte length
    header_start = kMagicSize + 6;
    MEMOE_CHECK(file.size() >= header_start, path, ": file is ", file.size(), " bytes, too short for .npy");
    header_size = load_le<uint32_t>(file.data() + kMagicSize + 2);
  }
  MEMOE_CHECK(header_size <= file.size() - header_start, path, ": .npy header length ", header_size,
              " exceeds the file");

  NpyArray array;
  array.path = path;
  HeaderParser(path, std::string(file.begin() + header_start, file.begin() + header_start + header_size))
      .parse(array);

  const size_t data_start = header_start + header_size;
  const uint64_t available = file.size() - data_start;
  uint64_t needed = 0;
  MEMOE_CHECK(!__builtin_mul_overflow(static_cast<uint64_t>(array.numel()), item_size(array.dtype), &needed),
              path, ": .npy shape overflows 64 bits");
  MEMOE_CHECK(available >= needed, path, ": .npy data truncated: shape ", shape_string(array.shape), " needs ",
              needed, " bytes, file has ", available);
  MEMOE_CHECK(available == needed, path, ": .npy file has ", available - needed, " bytes after the data");
  array.bytes.assign(file.begin() + data_start, file.end());
  return array;
}

Tensor NpyArray::to_tensor() const {
  check_consistent(*this);
  Tensor result(shape);
  const int64_t n = numel();
  const uint8_t* src = bytes.data();
  for (int64_t i = 0; i < n; ++i) {
    switch (dtype) {
      case NpyDType::F32: result[i] = load_le<float>(src + 4 * i); break;
      case NpyDType::F64: result[i] = static_cast<float>(load_le<double>(src + 8 * i)); break;
      case NpyDType::I32: result[i] = static_cast<float>(load_le<int32_t>(src + 4 * i)); break;
      case NpyDType::I64: result[i] = static_cast<float>(load_le<int64_t>(src + 8 * i)); break;
    }
  }
  return result;
}

std::vector<double> NpyArray::to_f64() const {
  check_consistent(*this);
  const int64_t n = numel();
  std::vector<double> result(static_cast<size_t>(n));
  const uint8_t* src = bytes.data();
  for (int64_t i = 0; i < n; ++i) {
    double& out = result[static_cast<size_t>(i)];
    switch (dtype) {
      case NpyDType::F32: out = load_le<float>(src + 4 * i); break;
      case NpyDType::F64: out = load_le<double>(src + 8 * i); break;
      case NpyDType::I32: out = load_le<int32_t>(src + 4 * i); break;
      case NpyDType::I64: out = static_cast<double>(load_le<int64_t>(src + 8 * i)); break;
    }
  }
  return result;
}

std::vector<int64_t> NpyArray::to_i64() const {
  MEMOE_CHECK(dtype == NpyDType::I32 || dtype == NpyDType::I64, path, ": .npy array is ", npy_descr(dtype),
              ", not an integer type");
  check_consistent(*this);
  const int64_t n = numel();
  std::vector<int64_t> result(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    result[static_cast<size_t>(i)] = dtype == NpyDType::I64 ? load_le<int64_t>(bytes.data() + 8 * i)
                                                            : load_le<int32_t>(bytes.data() + 4 * i);
  return result;
}

void write_npy_f32(const std::string& path, const std::vector<int64_t>& shape, const float* data) {
  write_npy(path, NpyDType::F32, shape, data);
}

void write_npy_f32(const std::string& path, const Tensor& tensor) {
  write_npy(path, NpyDType::F32, tensor.shape(), tensor.data());
}

void write_npy_i64(const std::string& path, const std::vector<int64_t>& shape, const int64_t* data) {
  write_npy(path, NpyDType::I64, shape, data);
}

}  // namespace memoe
