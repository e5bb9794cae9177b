// SafetensorsFile (the mmap reader): open and validate the header, then read
// every tensor the way the loaders do. Input: one .safetensors file.
#include <cstdint>

#include "fuzz_util.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = memoe::fuzz::write_input(data, size, "input.safetensors");
  return memoe::fuzz::run_one([&] {
    const memoe::SafetensorsFile f = memoe::SafetensorsFile::open(path);
    volatile uint32_t sink = 0;
    for (const auto& [key, value] : f.metadata()) sink = sink + uint32_t(key.size() + value.size());
    for (const std::string& name : f.names()) {
      const memoe::TensorInfo& info = f.info(name);
      const std::span<const uint8_t> bytes = f.raw_bytes(name);
      memoe::fuzz::require(bytes.size() == info.end - info.begin, "raw_bytes spans data_offsets");
      for (uint8_t b : bytes) sink = sink + b;  // every byte must lie inside the mapping
      try {
        const memoe::Tensor t = f.read_f32(name);
        memoe::fuzz::require(t.numel() == info.numel(), "read_f32 gives numel elements");
      } catch (const memoe::Error&) {
      }
      try {
        const std::vector<int64_t> ids = f.read_i64(name);
        memoe::fuzz::require(int64_t(ids.size()) == info.numel(), "read_i64 gives numel elements");
      } catch (const memoe::Error&) {
      }
    }
  });
}
