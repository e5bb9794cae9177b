// read_token_meta and TokenSplitReader over a data directory written from
// the input (multi-file format, fuzz_util.h: meta.json plus shard files).
#include <algorithm>
#include <cstdint>
#include <vector>

#include "fuzz_util.h"
#include "io/token_shards.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string dir = memoe::fuzz::write_input_dir(data, size, "tokens");
  return memoe::fuzz::run_one([&] {
    const memoe::TokenDataMeta meta = memoe::read_token_meta(dir);
    for (const auto& [name, split] : meta.splits) {
      for (bool scan : {true, false}) {
        try {
          const memoe::TokenSplitReader reader(dir, name, scan);
          memoe::fuzz::require(reader.size() == split.tokens, "reader size matches meta.json");
          std::vector<int64_t> out(size_t(std::min<int64_t>(reader.size(), 1 << 16)));
          reader.read(0, int64_t(out.size()), out.data());
          for (int64_t id : out) memoe::fuzz::require(id >= 0 && id < reader.vocab_size(), "ids are in range");
          if (reader.size() > 0) (void)reader.at(reader.size() - 1);
          try {
            reader.read(reader.size(), 1, out.data());
            memoe::fuzz::require(false, "a read past the end is refused");
          } catch (const memoe::Error&) {
          }
        } catch (const memoe::Error&) {
        }
      }
    }
    (void)memoe::TokenSplitReader(dir, "no_such_split");
  });
}
