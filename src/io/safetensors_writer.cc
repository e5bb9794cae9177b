// SafetensorsWriter (declared in io/safetensors.h).
#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/bf16.h"
#include "core/error.h"
#include "io/atomic_file.h"
#include "io/format_util.h"
#include "io/safetensors.h"

namespace memoe {

using nlohmann::json;

SafetensorsWriter::Entry& SafetensorsWriter::new_entry(const std::string& name, DType dtype,
                                                       std::vector<int64_t> shape, bool allocate) {
  MEMOE_CHECK(!name.empty(), "safetensors: tensor name is empty");
  MEMOE_CHECK(name != "__metadata__", "safetensors: \"__metadata__\" is reserved, not a tensor name");
  MEMOE_CHECK(!entries_.count(name), "safetensors: tensor ", quoted(name), " added twice");
  uint64_t numel = 1;
  for (int64_t extent : shape) {
    MEMOE_CHECK(extent >= 0, "safetensors: tensor ", quoted(name), ": negative shape ", shape_string(shape));
    MEMOE_CHECK(!__builtin_mul_overflow(numel, static_cast<uint64_t>(extent), &numel),
                "safetensors: tensor ", quoted(name), ": shape ", shape_string(shape), " overflows");
  }
  uint64_t nbytes = 0;
  MEMOE_CHECK(!__builtin_mul_overflow(numel, dtype_size(dtype), &nbytes) && nbytes <= SIZE_MAX / 2,
              "safetensors: tensor ", quoted(name), ": shape ", shape_string(shape), " is too large");
  Entry& entry = entries_[name];
  entry.dtype = dtype;
  entry.shape = std::move(shape);
  if (allocate) entry.bytes.resize(static_cast<size_t>(nbytes));
  entry.size = static_cast<size_t>(nbytes);
  return entry;
}

void SafetensorsWriter::add_f32_view(const std::string& name, const Tensor& tensor) {
  add_f32_view(name, tensor.shape(), tensor.data());
}

void SafetensorsWriter::add_f32_view(const std::string& name, std::vector<int64_t> shape, const float* data) {
  Entry& entry = new_entry(name, DType::F32, std::move(shape), false);
  MEMOE_CHECK(entry.size == 0 || data, "safetensors: tensor ", quoted(name), ": no data");
  entry.view = data;
}

void SafetensorsWriter::add_f32(const std::string& name, const Tensor& tensor, DType stored) {
  add_f32(name, tensor.shape(), tensor.data(), stored);
}

void SafetensorsWriter::add_f32(const std::string& name, std::vector<int64_t> shape, const float* data,
                                DType stored) {
  MEMOE_CHECK(stored == DType::F32 || stored == DType::BF16, "safetensors: tensor ", quoted(name),
              ": float tensors are stored as F32 or BF16, not ", dtype_name(stored));
  Entry& entry = new_entry(name, stored, std::move(shape), true);
  const size_t n = entry.bytes.size() / dtype_size(stored);
  if (n > 0 && !data) {
    entries_.erase(name);
    fail("safetensors: tensor ", quoted(name), ": no data");
  }
  if (stored == DType::F32) {
    if (n > 0) std::memcpy(entry.bytes.data(), data, n * 4);
  } else {
    for (size_t i = 0; i < n; ++i) {
      const uint16_t half = float_to_bf16(data[i]);
      std::memcpy(entry.bytes.data() + 2 * i, &half, 2);
    }
  }
}

void SafetensorsWriter::add_i64(const std::string& name, std::vector<int64_t> shape, const int64_t* data) {
  Entry& entry = new_entry(name, DType::I64, std::move(shape), true);
  if (!entry.bytes.empty() && !data) {
    entries_.erase(name);
    fail("safetensors: tensor ", quoted(name), ": no data");
  }
  if (!entry.bytes.empty()) std::memcpy(entry.bytes.data(), data, entry.bytes.size());
}

void SafetensorsWriter::set_metadata(const std::string& key, const std::string& value) {
  metadata_[key] = value;
}

void SafetensorsWriter::write(const std::string& path) const {
  // Data order: wider elements first so each tensor is aligned to its size.
  std::vector<const std::pair<const std::string, Entry>*> order;
  for (const auto& entry : entries_) order.push_back(&entry);
  std::stable_sort(order.begin(), order.end(), [](const auto* a, const auto* b) {
    return dtype_size(a->second.dtype) > dtype_size(b->second.dtype);
  });

  json header = json::object();
  uint64_t offset = 0;
  for (const auto* entry : order) {
    const uint64_t end = offset + entry->second.size;
    header[entry->first] = {{"dtype", dtype_name(entry->second.dtype)},
                            {"shape", entry->second.shape},
                            {"data_offsets", {offset, end}}};
    offset = end;
  }
  if (!metadata_.empty()) header["__metadata__"] = metadata_;

  std::string text;
  try {
    text = header.dump();  // compact; keys come out sorted (std::map)
  } catch (const json::exception&) {
    fail("cannot write ", path, ": tensor names and metadata must be valid UTF-8");
  }
  text.append((8 - (8 + text.size()) % 8) % 8, ' ');  // data buffer starts 8-aligned
  const uint64_t header_size = text.size();
  uint8_t length_field[8];
  for (int i = 0; i < 8; ++i) length_field[i] = static_cast<uint8_t>(header_size >> (8 * i));

  AtomicFileWriter out(path);
  out.write(length_field, 8);
  out.write(text);
  for (const auto* entry : order) {
    const Entry& e = entry->second;
    out.write(e.view ? e.view : e.bytes.data(), e.size);
  }
  out.commit();
}

}  // namespace memoe
