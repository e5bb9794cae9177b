#include "model/init.h"

#include <cmath>
#include <numeric>

#include "core/error.h"
#include "core/rng.h"

namespace memoe {

namespace {
constexpr double kInitStd = 0.02;
}  // namespace

std::vector<EngramHash> make_engram_hashes(const ModelConfig& cfg, const std::vector<int64_t>& token_map) {
  std::vector<EngramHash> hashes(size_t(cfg.num_hidden_layers));
  if (!cfg.engram) return hashes;
  const EngramConfig& e = *cfg.engram;
  int64_t compressed_vocab = cfg.vocab_size;
  int64_t compressed_pad = e.pad_id;
  if (!token_map.empty()) {
    compressed_vocab = *std::max_element(token_map.begin(), token_map.end()) + 1;
    compressed_pad = token_map[size_t(e.pad_id)];
  }
  auto primes = engram_table_primes(e.layer_ids, e.max_ngram_size, e.n_head_per_ngram, e.table_sizes);
  for (size_t k = 0; k < e.layer_ids.size(); ++k) {
    EngramHash& h = hashes[size_t(e.layer_ids[k])];
    h.multipliers = engram_hash_multipliers(compressed_vocab, e.max_ngram_size, e.seed, e.layer_ids[k]);
    h.primes = primes[k];
    h.compressed_pad = compressed_pad;
  }
  return hashes;
}

Model init_model(const ModelConfig& cfg, uint64_t seed, std::vector<int64_t> token_map) {
  validate_config(cfg);
  Model m;
  m.config = cfg;
  if (token_map.empty()) {
    token_map.resize(size_t(cfg.vocab_size));
    std::iota(token_map.begin(), token_map.end(), int64_t{0});
  }
  MEMOE_CHECK(int64_t(token_map.size()) == cfg.vocab_size, "token map has ", token_map.size(),
              " entries, vocab_size is ", cfg.vocab_size);
  m.token_map = std::move(token_map);
  m.engram_hash = make_engram_hashes(cfg, m.token_map);
  m.params.allocate(cfg, m.engram_rows(), false);

  Rng rng(seed);
  const double out_std = kInitStd / std::sqrt(2.0 * cfg.num_hidden_layers);
  m.params.visit([&](const std::string&, Tensor& t, const ParamRole& role) {
    float* x = t.data();
    const int64_t n = t.numel();
    switch (role.init) {
      case ParamInit::Ones:
        std::fill(x, x + n, 1.0f);
        break;
      case ParamInit::Zeros:
        std::fill(x, x + n, 0.0f);
        break;
      case ParamInit::Normal:
      case ParamInit::OutputNormal: {
        const double std = role.init == ParamInit::OutputNormal ? out_std : kInitStd;
        for (int64_t i = 0; i < n; ++i) x[i] = float(rng.normal() * std);
        break;
      }
    }
  });
  return m;
}

}  // namespace memoe
