// read_npy and the NpyArray conversions. Input: one .npy file.
#include <cstdint>

#include "fuzz_util.h"
#include "io/npy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = memoe::fuzz::write_input(data, size, "input.npy");
  return memoe::fuzz::run_one([&] {
    const memoe::NpyArray a = memoe::read_npy(path);
    const memoe::Tensor t = a.to_tensor();
    memoe::fuzz::require(t.numel() == a.numel(), "to_tensor gives numel elements");
    memoe::fuzz::require(int64_t(a.to_f64().size()) == a.numel(), "to_f64 gives numel elements");
    if (a.dtype == memoe::NpyDType::I32 || a.dtype == memoe::NpyDType::I64)
      memoe::fuzz::require(int64_t(a.to_i64().size()) == a.numel(), "to_i64 gives numel elements");
  });
}
