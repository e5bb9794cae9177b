#include "io/safetensors.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <system_error>
#include <unordered_set>

#include "core/bf16.h"
#include "core/error.h"
#include "io/format_util.h"

namespace memoe {

static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian");

using nlohmann::json;

namespace {

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // real headers are ~100 KB
constexpr int kMaxJsonDepth = 16;                   // the format nests 3 deep

struct DTypeEntry {
  DType dtype;
  const char* name;
  size_t size;
};
constexpr DTypeEntry kDTypes[] = {
    {DType::BOOL, "BOOL", 1}, {DType::U8, "U8", 1},   {DType::I8, "I8", 1},
    {DType::I16, "I16", 2},   {DType::U16, "U16", 2}, {DType::F16, "F16", 2},
    {DType::BF16, "BF16", 2}, {DType::I32, "I32", 4}, {DType::U32, "U32", 4},
    {DType::F32, "F32", 4},   {DType::F64, "F64", 8}, {DType::I64, "I64", 8},
    {DType::U64, "U64", 8},   {DType::F8_E4M3, "F8_E4M3", 1}, {DType::F8_E5M2, "F8_E5M2", 1},
};

const DTypeEntry* find_dtype(const std::string& name) {
  for (const auto& entry : kDTypes)
    if (name == entry.name) return &entry;
  return nullptr;
}

bool is_float(DType dtype) {
  return dtype == DType::F32 || dtype == DType::BF16 || dtype == DType::F16 || dtype == DType::F64;
}

// Parses the header, refusing duplicate keys (nlohmann would silently keep
// the last, hiding a corrupted or hostile header) and deep nesting (which
// could make a 100 MB header cost gigabytes).
json parse_header_json(const std::string& path, const char* begin, const char* end) {
  std::vector<std::unordered_set<std::string>> open_objects;
  auto check = [&](int depth, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        if (depth > kMaxJsonDepth) fail(path, ": header JSON nests deeper than ", kMaxJsonDepth);
        if (event == json::parse_event_t::object_start) open_objects.emplace_back();
        break;
      case json::parse_event_t::object_end:
        if (!open_objects.empty()) open_objects.pop_back();
        break;
      case json::parse_event_t::key:
        if (!open_objects.empty() && !open_objects.back().insert(parsed.get<std::string>()).second)
          fail(path, ": header has the key ", quoted(parsed.get<std::string>()), " twice");
        break;
      default:
        break;
    }
    return true;
  };
  json header = json::parse(begin, end, check, /*allow_exceptions=*/false);
  if (header.is_discarded()) fail(path, ": header is not valid JSON");
  if (!header.is_object()) fail(path, ": header is not a JSON object");
  return header;
}

// Reads a JSON non-negative integer; `what` names it for the error.
uint64_t get_count(const json& value, const std::string& context, const char* what) {
  if (!value.is_number_integer()) fail(context, what, " is not an integer");
  if (!value.is_number_unsigned()) fail(context, what, " is negative");
  return value.get<uint64_t>();
}

TensorInfo parse_tensor(const std::string& context, const json& entry, uint64_t data_size) {
  if (!entry.is_object()) fail(context, "entry is not a JSON object");
  TensorInfo info;

  const auto dtype_it = entry.find("dtype");
  if (dtype_it == entry.end()) fail(context, "no dtype");
  if (!dtype_it->is_string()) fail(context, "dtype is not a string");
  const DTypeEntry* dtype = find_dtype(dtype_it->get<std::string>());
  if (!dtype) fail(context, "unknown dtype ", quoted(dtype_it->get<std::string>()));
  info.dtype = dtype->dtype;

  const auto shape_it = entry.find("shape");
  if (shape_it == entry.end()) fail(context, "no shape");
  if (!shape_it->is_array()) fail(context, "shape is not a list");
  uint64_t numel = 1;
  for (const json& dim : *shape_it) {
    const uint64_t extent = get_count(dim, context, "shape entry");
    if (extent > static_cast<uint64_t>(INT64_MAX) || __builtin_mul_overflow(numel, extent, &numel))
      fail(context, "shape overflows 64 bits");
    info.shape.push_back(static_cast<int64_t>(extent));
  }
  uint64_t nbytes = 0;
  if (numel > static_cast<uint64_t>(INT64_MAX) || __builtin_mul_overflow(numel, dtype->size, &nbytes))
    fail(context, "byte size overflows 64 bits");

  const auto offsets_it = entry.find("data_offsets");
  if (offsets_it == entry.end()) fail(context, "no data_offsets");
  if (!offsets_it->is_array() || offsets_it->size() != 2) fail(context, "data_offsets is not [begin, end]");
  info.begin = get_count((*offsets_it)[0], context, "data_offsets begin");
  info.end = get_count((*offsets_it)[1], context, "data_offsets end");
  if (info.end < info.begin) fail(context, "data_offsets end ", info.end, " is before begin ", info.begin);
  if (info.end > data_size)
    fail(context, "data_offsets end ", info.end, " is beyond the data buffer (", data_size, " bytes)");
  if (info.end - info.begin != nbytes)
    fail(context, "data_offsets span ", info.end - info.begin, " bytes but shape ", shape_string(info.shape),
         " of ", dtype->name, " needs ", nbytes);
  return info;
}

}  // namespace

const char* dtype_name(DType dtype) {
  for (const auto& entry : kDTypes)
    if (entry.dtype == dtype) return entry.name;
  return "?";
}

size_t dtype_size(DType dtype) {
  for (const auto& entry : kDTypes)
    if (entry.dtype == dtype) return entry.size;
  return 0;
}

int64_t TensorInfo::numel() const { return static_cast<int64_t>(Tensor::count(shape)); }

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  SafetensorsFile file;
  file.path_ = path;

  file.mapping_ = std::make_shared<const MappedFile>(path);
  const uint64_t file_size = file.mapping_->size();
  if (file_size < 8) fail(path, ": file is ", file_size, " bytes, too short for the 8-byte header length");
  const uint8_t* bytes = file.mapping_->data();

  const uint64_t header_size = load_le<uint64_t>(bytes);
  if (header_size > kMaxHeaderBytes)
    fail(path, ": header length ", header_size, " is absurd (limit ", kMaxHeaderBytes, " bytes)");
  if (header_size > file_size - 8)
    fail(path, ": header length ", header_size, " exceeds the ", file_size - 8, " bytes after it");
  const uint64_t data_size = file_size - 8 - header_size;
  file.data_ = bytes + 8 + header_size;

  const char* header_begin = reinterpret_cast<const char*>(bytes + 8);
  const json header = parse_header_json(path, header_begin, header_begin + header_size);

  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      if (!value.is_object()) fail(path, ": __metadata__ is not a JSON object");
      for (const auto& [meta_key, meta_value] : value.items()) {
        if (!meta_value.is_string()) fail(path, ": __metadata__ value of ", quoted(meta_key), " is not a string");
        file.metadata_[meta_key] = meta_value.get<std::string>();
      }
      continue;
    }
    const std::string context = path + ": tensor " + quoted(key) + ": ";
    file.tensors_.emplace(key, parse_tensor(context, value, data_size));
  }

  // Tensors must not share bytes (empty tensors occupy none).
  std::vector<std::pair<const std::string*, const TensorInfo*>> by_offset;
  for (const auto& [name, info] : file.tensors_)
    if (info.end > info.begin) by_offset.emplace_back(&name, &info);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const auto& a, const auto& b) { return a.second->begin < b.second->begin; });
  for (size_t i = 1; i < by_offset.size(); ++i)
    if (by_offset[i].second->begin < by_offset[i - 1].second->end)
      fail(path, ": tensors ", quoted(*by_offset[i - 1].first), " and ", quoted(*by_offset[i].first),
           " overlap in the data buffer");
  return file;
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> result;
  result.reserve(tensors_.size());
  for (const auto& entry : tensors_) result.push_back(entry.first);
  return result;
}

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
  const auto it = tensors_.find(name);
  if (it == tensors_.end()) fail(path_, ": no tensor ", quoted(name));
  return it->second;
}

std::span<const uint8_t> SafetensorsFile::raw_bytes(const std::string& name) const {
  const TensorInfo& tensor = info(name);
  return {data_ + tensor.begin, static_cast<size_t>(tensor.end - tensor.begin)};
}

void SafetensorsFile::read_f32_into(const std::string& name, float* out, int64_t count) const {
  const TensorInfo& tensor = info(name);
  const int64_t n = tensor.numel();
  if (count != n)
    fail(path_, ": tensor ", quoted(name), ": has ", n, " elements ", shape_string(tensor.shape),
         " but the destination holds ", count);
  const uint8_t* src = data_ + tensor.begin;
  switch (tensor.dtype) {
    case DType::F32:
      if (n > 0) std::memcpy(out, src, static_cast<size_t>(n) * 4);
      break;
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_float(load_le<uint16_t>(src + 2 * i));
      break;
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) out[i] = f16_to_float(load_le<uint16_t>(src + 2 * i));
      break;
    case DType::F64:
      for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(load_le<double>(src + 8 * i));
      break;
    default:
      fail(path_, ": tensor ", quoted(name), ": is ", dtype_name(tensor.dtype), ", not a float type (F32, BF16, F16, F64)");
  }
}

Tensor SafetensorsFile::read_f32(const std::string& name) const {
  const TensorInfo& tensor = info(name);
  if (!is_float(tensor.dtype))
    fail(path_, ": tensor ", quoted(name), ": is ", dtype_name(tensor.dtype), ", not a float type (F32, BF16, F16, F64)");
  Tensor result(tensor.shape);
  read_f32_into(name, result.data(), result.numel());
  return result;
}

bool SafetensorsFile::viewable(const std::string& name) const {
  const TensorInfo& tensor = info(name);
  if (tensor.dtype != DType::F32 && tensor.dtype != DType::BF16) return false;
  return reinterpret_cast<uintptr_t>(data_ + tensor.begin) % dtype_size(tensor.dtype) == 0;
}

Tensor SafetensorsFile::view(const std::string& name) const {
  const TensorInfo& tensor = info(name);
  if (!viewable(name))
    fail(path_, ": tensor ", quoted(name), ": ", dtype_name(tensor.dtype),
         " values at this offset cannot be viewed in place (only aligned F32 and BF16 can)");
  // The engine runs on little-endian hosts only (x86-64, aarch64), where the
  // stored bytes are the values.
  const uint8_t* src = data_ + tensor.begin;
  if (tensor.dtype == DType::F32) return Tensor::view_f32(tensor.shape, reinterpret_cast<const float*>(src), mapping_);
  return Tensor::view_bf16(tensor.shape, reinterpret_cast<const uint16_t*>(src), mapping_);
}

std::vector<int64_t> SafetensorsFile::read_i64(const std::string& name) const {
  const TensorInfo& tensor = info(name);
  if (tensor.dtype != DType::I64 && tensor.dtype != DType::I32)
    fail(path_, ": tensor ", quoted(name), ": is ", dtype_name(tensor.dtype), ", not an integer type (I64, I32)");
  const int64_t n = tensor.numel();
  const uint8_t* src = data_ + tensor.begin;
  std::vector<int64_t> result(static_cast<size_t>(n));
  switch (tensor.dtype) {
    case DType::I64:
      if (n > 0) std::memcpy(result.data(), src, static_cast<size_t>(n) * 8);
      break;
    case DType::I32:
      for (int64_t i = 0; i < n; ++i) result[static_cast<size_t>(i)] = load_le<int32_t>(src + 4 * i);
      break;
    default:
      break;  // refused above
  }
  return result;
}

}  // namespace memoe
