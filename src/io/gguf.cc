#include "io/gguf.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/bf16.h"
#include "core/error.h"
#include "io/atomic_file.h"

namespace memoe {

namespace {

// GGUF's value types (gguf-py's GGUFValueType).
enum : uint32_t { kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7, kString = 8, kArray = 9 };
constexpr uint64_t kAlignment = 32;
constexpr int64_t kQ8Block = 32;

template <class T>
void put(std::vector<uint8_t>& out, T value) {
  const size_t at = out.size();
  out.resize(at + sizeof(T));
  std::memcpy(out.data() + at, &value, sizeof(T));  // the engine runs on little-endian hosts only
}

void put_string(std::vector<uint8_t>& out, const std::string& s) {
  put<uint64_t>(out, s.size());
  out.insert(out.end(), s.begin(), s.end());
}

}  // namespace

GgufTensorType parse_gguf_tensor_type(const std::string& name) {
  if (name == "f32") return GgufTensorType::F32;
  if (name == "f16") return GgufTensorType::F16;
  if (name == "bf16") return GgufTensorType::BF16;
  if (name == "q8_0") return GgufTensorType::Q8_0;
  fail("--dtype must be f32, f16, bf16 or q8_0, not '", name, "'");
}

const char* gguf_tensor_type_name(GgufTensorType t) {
  switch (t) {
    case GgufTensorType::F32: return "f32";
    case GgufTensorType::F16: return "f16";
    case GgufTensorType::BF16: return "bf16";
    case GgufTensorType::Q8_0: return "q8_0";
  }
  return "?";
}

int64_t gguf_tensor_bytes(GgufTensorType t, int64_t n) {
  switch (t) {
    case GgufTensorType::F32: return 4 * n;
    case GgufTensorType::F16:
    case GgufTensorType::BF16: return 2 * n;
    case GgufTensorType::Q8_0: return (n / kQ8Block) * (2 + kQ8Block);
  }
  return 0;
}

std::vector<uint8_t> encode_gguf_tensor(GgufTensorType t, const float* x, int64_t n) {
  std::vector<uint8_t> out;
  out.reserve(size_t(gguf_tensor_bytes(t, n)));
  switch (t) {
    case GgufTensorType::F32:
      for (int64_t i = 0; i < n; ++i) put<float>(out, x[i]);
      break;
    case GgufTensorType::F16:
      for (int64_t i = 0; i < n; ++i) put<uint16_t>(out, float_to_f16(x[i]));
      break;
    case GgufTensorType::BF16:
      for (int64_t i = 0; i < n; ++i) put<uint16_t>(out, float_to_bf16(x[i]));
      break;
    case GgufTensorType::Q8_0:
      MEMOE_CHECK(n % kQ8Block == 0, "q8_0: ", n, " values are not whole blocks of 32");
      for (int64_t b = 0; b < n; b += kQ8Block) {
        float amax = 0;
        for (int64_t i = 0; i < kQ8Block; ++i) amax = std::max(amax, std::fabs(x[b + i]));
        const float d = amax / 127.0f, inv = d > 0 ? 1.0f / d : 0.0f;
        // The scale is stored as a half; the values are rounded against the
        // float scale, as ggml's quantize_row_q8_0_ref does.
        put<uint16_t>(out, float_to_f16(d));
        for (int64_t i = 0; i < kQ8Block; ++i) put<int8_t>(out, int8_t(std::lround(x[b + i] * inv)));
      }
      break;
  }
  return out;
}

std::vector<float> decode_q8_0(const uint8_t* bytes, int64_t n) {
  std::vector<float> out(static_cast<size_t>(n));
  for (int64_t b = 0; b < n / kQ8Block; ++b) {
    const uint8_t* block = bytes + b * (2 + kQ8Block);
    uint16_t half;
    std::memcpy(&half, block, 2);
    const float d = f16_to_float(half);
    for (int64_t i = 0; i < kQ8Block; ++i) out[size_t(b * kQ8Block + i)] = d * float(int8_t(block[2 + i]));
  }
  return out;
}

void GgufWriter::key(const std::string& name, uint32_t value_type) {
  put_string(kv_, name);
  put<uint32_t>(kv_, value_type);
  ++n_kv_;
}

void GgufWriter::add_u32(const std::string& k, uint32_t v) { key(k, kU32), put<uint32_t>(kv_, v); }
void GgufWriter::add_i32(const std::string& k, int32_t v) { key(k, kI32), put<int32_t>(kv_, v); }
void GgufWriter::add_f32(const std::string& k, float v) { key(k, kF32), put<float>(kv_, v); }
void GgufWriter::add_bool(const std::string& k, bool v) { key(k, kBool), put<uint8_t>(kv_, v ? 1 : 0); }
void GgufWriter::add_string(const std::string& k, const std::string& v) { key(k, kString), put_string(kv_, v); }

void GgufWriter::add_strings(const std::string& k, const std::vector<std::string>& values) {
  key(k, kArray);
  put<uint32_t>(kv_, kString);
  put<uint64_t>(kv_, values.size());
  for (const std::string& v : values) put_string(kv_, v);
}

void GgufWriter::add_f32s(const std::string& k, const std::vector<float>& values) {
  key(k, kArray);
  put<uint32_t>(kv_, kF32);
  put<uint64_t>(kv_, values.size());
  for (float v : values) put<float>(kv_, v);
}

void GgufWriter::add_i32s(const std::string& k, const std::vector<int32_t>& values) {
  key(k, kArray);
  put<uint32_t>(kv_, kI32);
  put<uint64_t>(kv_, values.size());
  for (int32_t v : values) put<int32_t>(kv_, v);
}

void GgufWriter::add_tensor(const std::string& name, const std::vector<int64_t>& ne, GgufTensorType type,
                            const float* values) {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;
  MEMOE_CHECK(!ne.empty() && ne.size() <= 4 && n > 0, "gguf: tensor ", name, " has no valid shape");
  MEMOE_CHECK(type != GgufTensorType::Q8_0 || ne[0] % kQ8Block == 0, "gguf: tensor ", name, "'s rows of ", ne[0],
              " values are not whole q8_0 blocks of 32");
  for (const Tensor& t : tensors_) MEMOE_CHECK(t.name != name, "gguf: tensor ", name, " added twice");
  tensors_.push_back({name, ne, type, encode_gguf_tensor(type, values, n)});
}

void GgufWriter::write(const std::string& path) const {
  std::vector<uint8_t> head;
  head.insert(head.end(), {'G', 'G', 'U', 'F'});
  put<uint32_t>(head, 3);
  put<uint64_t>(head, tensors_.size());
  put<uint64_t>(head, n_kv_ + 1);
  head.insert(head.end(), kv_.begin(), kv_.end());
  put_string(head, "general.alignment");
  put<uint32_t>(head, kU32);
  put<uint32_t>(head, uint32_t(kAlignment));
  uint64_t offset = 0;
  for (const Tensor& t : tensors_) {
    put_string(head, t.name);
    put<uint32_t>(head, uint32_t(t.ne.size()));
    for (int64_t d : t.ne) put<uint64_t>(head, uint64_t(d));
    put<uint32_t>(head, uint32_t(t.type));
    put<uint64_t>(head, offset);
    offset += (t.data.size() + kAlignment - 1) / kAlignment * kAlignment;
  }
  head.resize((head.size() + kAlignment - 1) / kAlignment * kAlignment, 0);
  AtomicFileWriter out(path);
  out.write(head.data(), head.size());
  const std::vector<uint8_t> zeros(kAlignment, 0);
  for (const Tensor& t : tensors_) {
    out.write(t.data.data(), t.data.size());
    const size_t pad = (kAlignment - t.data.size() % kAlignment) % kAlignment;
    if (pad) out.write(zeros.data(), pad);
  }
  out.commit();
}

}  // namespace memoe
