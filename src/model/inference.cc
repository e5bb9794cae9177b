#include "model/inference.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "kernels/elementwise.h"
#include "kernels/embedding.h"
#include "kernels/linear.h"
#include "kernels/norm.h"
#include "model/rope.h"

namespace memoe {

namespace {

const Tensor& lm_head_of(const Model& m) {
  return m.config.tie_word_embeddings ? m.params.embed_tokens : m.params.lm_head;
}

// One chunk of n tokens through the stack; the new positions' final hidden
// states (normed) into final_out [n, d].
void forward_chunk(const Model& m, SequenceState& s, const int64_t* ids, int64_t n, Tensor& final_out) {
  const ModelConfig& cfg = m.config;
  const int64_t d = cfg.hidden_size, first = s.length;
  if (s.rope.seq_len < first + n) s.rope = make_model_rope_table(cfg, std::max(2 * s.rope.seq_len, first + n));
  check_token_ids(cfg, ids, n);
  for (int64_t i = 0; i < n; ++i) s.compressed_ids.push_back(m.token_map.empty() ? ids[i] : m.token_map[size_t(ids[i])]);

  Tensor h({n, d}), x({n, d}), branch({n, d}), rstd({n});
  embedding_forward(m.params.embed_tokens.data(), ids, n, d, h.data());
  for (int li = 0; li < cfg.num_hidden_layers; ++li) {
    const LayerParams& p = m.params.layers[size_t(li)];
    if (p.has_engram) {
      const EngramHash& hash = m.engram_hash[size_t(li)];
      const int64_t before = cfg.engram->max_ngram_size - 1;
      std::vector<int64_t> window(size_t(before + n));
      for (int64_t j = 0; j < before + n; ++j) {
        const int64_t pos = first - before + j;
        window[size_t(j)] = pos < 0 ? hash.compressed_pad : s.compressed_ids[size_t(pos)];
      }
      engram_cached(cfg, hash, p.engram, h.data(), window.data(), n, s.engram[size_t(li)], branch.data());
      add_into(h.data(), branch.data(), n * d);
    }
    rmsnorm_forward(h.data(), p.input_layernorm.data(), float(cfg.rms_norm_eps), n, d, x.data(), rstd.data());
    attention_block_cached(cfg, s.rope, p.attn, x.data(), n, s.attention[size_t(li)], branch.data());
    add_into(h.data(), branch.data(), n * d);
    rmsnorm_forward(h.data(), p.post_attention_layernorm.data(), float(cfg.rms_norm_eps), n, d, x.data(),
                    rstd.data());
    if (p.is_moe) {
      MoECache scratch;  // routing of these tokens; nothing carries over
      moe_forward(cfg, p.moe, x.data(), 1, n, scratch, branch.data());
    } else {
      SwiGLUCache scratch;
      swiglu_ffn_forward(p.mlp, x.data(), n, scratch, branch.data());
    }
    add_into(h.data(), branch.data(), n * d);
  }
  final_out.ensure({n, d});
  rmsnorm_forward(h.data(), m.params.norm.data(), float(cfg.rms_norm_eps), n, d, final_out.data(), rstd.data());
  s.length = first + n;
}

}  // namespace

int64_t SequenceState::cache_bytes() const {
  int64_t bytes = 0;
  for (const AttentionKvCache& a : attention) bytes += a.bytes();
  for (const EngramDecodeState& e : engram) bytes += int64_t(sizeof(float) * e.conv_history.size());
  return bytes;
}

SequenceState new_sequence(const Model& m) {
  SequenceState s;
  s.attention.resize(m.params.layers.size());
  s.engram.resize(m.params.layers.size());
  return s;
}

void feed_tokens(const Model& m, SequenceState& state, const int64_t* ids, int64_t n, int64_t chunk, Logits which,
                 Tensor& logits) {
  MEMOE_CHECK(chunk > 0, "prefill chunk size must be positive (got ", chunk, ")");
  MEMOE_CHECK(n >= 0, "negative token count");
  const int64_t d = m.config.hidden_size, V = m.config.vocab_size;
  if (which == Logits::All) logits.ensure({n, V});
  else if (which == Logits::Last && n > 0) logits.ensure({1, V});
  else logits = Tensor();
  Tensor final_out;
  for (int64_t done = 0; done < n;) {
    const int64_t k = std::min(chunk, n - done);
    forward_chunk(m, state, ids + done, k, final_out);
    if (which == Logits::All) {
      linear_forward(final_out.data(), lm_head_of(m), nullptr, k, d, V, logits.data() + done * V);
    } else if (which == Logits::Last && done + k == n) {
      linear_forward(final_out.data() + (k - 1) * d, lm_head_of(m), nullptr, 1, d, V, logits.data());
    }
    done += k;
  }
}

}  // namespace memoe
