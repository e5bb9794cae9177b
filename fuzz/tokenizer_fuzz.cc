// Tokenizer::load (a tokenizer directory: only tokenizer.model is read;
// sentencepiece parses the proto) and then every accessor memoe builds on
// the loaded model, the compressed token map included. Input: the bytes of
// tokenizer.model.
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz_util.h"
#include "io/token_map.h"
#include "io/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string dir = [] {
    const std::string d = memoe::fuzz::scratch_dir() + "/tokenizer";
    std::filesystem::create_directory(d);
    return d;
  }();
  memoe::fuzz::write_file(dir + "/tokenizer.model", {reinterpret_cast<const char*>(data), size});
  return memoe::fuzz::run_one([&] {
    const memoe::Tokenizer tok = memoe::Tokenizer::load(dir);
    const int n = tok.vocab_size();
    memoe::fuzz::require(n > 0 && tok.eos_id() >= 0 && tok.eos_id() < n, "a loaded model has eos");
    const int limit = std::min(n, 4096);
    for (int id = 0; id < limit; ++id) {
      (void)tok.piece(id);
      try {
        (void)tok.decode_one(id);
      } catch (const memoe::Error&) {
      }
    }
    std::vector<int32_t> ids;
    try {
      ids = tok.encode("Hello, world!\n\tZ\xc3\xbcrich 42 \xe2\x96\x81 \xf0\x9f\x99\x82");
    } catch (const memoe::Error&) {
    }
    for (int32_t id : ids) memoe::fuzz::require(id >= 0 && id < n, "encode gives ids in range");
    try {
      (void)tok.decode(ids);
    } catch (const memoe::Error&) {
    }
    if (n <= 4096) (void)memoe::compressed_token_map(tok, n);
  });
}
