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

namespace {

// The mHC paper's gating-factor initialisation (Table 5).
constexpr float kMhcGatingInit = 0.01f;

// Biases that make a mix the identity-like fixed map at step 0 (with the
// gating factors small, the biases alone set the coefficients): pre_j =
// sigmoid(b) + eps = 1/n (the collapse is the streams' mean), post_j =
// 2 sigmoid(0) = 1, and a combination whose row softmax puts 0.99 on the
// diagonal (e^beta = 99 (n - 1)); the head's weights 1/n too. With the
// streams equal (the embedding copied into each), every stream then carries
// the plain residual: a V4 model starts as its hc_mult 1 counterpart would.
void init_mhc_base(int n, bool head, float* b) {
  const double pre = std::log((1.0 / n) / (1.0 - 1.0 / n));  // logit(1/n), ~ -1.10 for n = 4
  for (int j = 0; j < n; ++j) b[j] = float(pre);
  if (head) return;
  for (int j = 0; j < n; ++j) b[n + j] = 0.0f;
  const float diagonal = float(std::log(99.0 * (n - 1)));
  for (int j = 0; j < n; ++j)
    for (int k = 0; k < n; ++k) b[2 * n + j * n + k] = j == k ? diagonal : 0.0f;
}

}  // namespace

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
      case ParamInit::MhcBase:
      case ParamInit::MhcHeadBase:
        init_mhc_base(cfg.hc_mult, role.init == ParamInit::MhcHeadBase, x);
        break;
      case ParamInit::MhcScale:
        std::fill(x, x + n, kMhcGatingInit);
        break;
      case ParamInit::Normal:
      case ParamInit::OutputNormal: {
        const double std = role.init == ParamInit::OutputNormal ? out_std : kInitStd;
        for (int64_t i = 0; i < n; ++i) x[i] = float(rng.normal() * std);
        break;
      }
    }
  });
  // V4's token-routed layers: a fixed table, every expert used equally often.
  for (size_t l = 0; l < m.params.layers.size(); ++l) {
    MoEParams& moe = m.params.layers[l].moe;
    if (moe.routes_by_token())
      moe.tid2eid = balanced_token_routing(cfg.vocab_size, cfg.num_experts_per_tok, cfg.n_routed_experts,
                                           seed + 7919 * (l + 1));
  }
  return m;
}

}  // namespace memoe
