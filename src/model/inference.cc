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

int64_t compressed_id(const Model& m, int64_t id) { return m.token_map.empty() ? id : m.token_map[size_t(id)]; }

// Each sequence's compressed ids at positions length-(N-1) .. length+n-1,
// compressed_pad before its start: [S, N-1+n], the windows engram_cached
// reads. The n new ids (ids [S, n]) are not in the states yet.
std::vector<int64_t> engram_windows(const Model& m, const std::vector<SequenceState*>& seqs, const int64_t* ids,
                                    int64_t n) {
  const int64_t before = m.config.engram->max_ngram_size - 1, S = int64_t(seqs.size());
  const int64_t pad = m.engram_hash[size_t(m.config.engram->layer_ids.at(0))].compressed_pad;
  std::vector<int64_t> windows(size_t(S * (before + n)));
  for (int64_t s = 0; s < S; ++s) {
    const SequenceState& q = *seqs[size_t(s)];
    for (int64_t j = 0; j < before + n; ++j) {
      const int64_t pos = q.length - before + j;
      int64_t& w = windows[size_t(s * (before + n) + j)];
      if (pos < 0)
        w = pad;
      else if (pos < q.length)
        w = q.compressed_ids[size_t(pos)];
      else
        w = compressed_id(m, ids[s * n + pos - q.length]);
    }
  }
  return windows;
}

// Asks the prefetcher for every Engram row the n new tokens will read,
// before the first layer runs: the reads then overlap the layers before the
// first Engram layer (and, for a prompt, its whole prefill).
void prefetch_engram_rows(const Model& m, const std::vector<SequenceState*>& seqs, const int64_t* ids, int64_t n) {
  if (!m.engram_prefetcher || !m.config.engram || n == 0) return;
  check_token_ids(m.config, ids, int64_t(seqs.size()) * n);
  const std::vector<int64_t> windows = engram_windows(m, seqs, ids, n);
  std::vector<MemoryRange> ranges;
  for (int li : m.config.engram->layer_ids) {
    const EngramParams& p = m.params.layers[size_t(li)].engram;
    for (int64_t row : engram_window_rows(m.config, m.engram_hash[size_t(li)], windows.data(), int64_t(seqs.size()), n))
      ranges.push_back(engram_row_memory(p, row));
  }
  m.engram_prefetcher->prefetch(ranges);
}

// n new tokens of each sequence (ids [S, n]) through the stack; the new
// positions' final hidden states, normed, into final_out [S*n, d].
void forward_rows(const Model& m, const std::vector<SequenceState*>& seqs, const int64_t* ids, int64_t n,
                  Tensor& final_out) {
  const ModelConfig& cfg = m.config;
  const int64_t d = cfg.hidden_size, S = int64_t(seqs.size()), rows = S * n;
  check_token_ids(cfg, ids, rows);
  const std::vector<int64_t> windows = cfg.engram ? engram_windows(m, seqs, ids, n) : std::vector<int64_t>();
  for (int64_t s = 0; s < S; ++s) {
    SequenceState& q = *seqs[size_t(s)];
    if (q.rope.seq_len < q.length + n)
      q.rope = make_model_rope_table(cfg, std::max(2 * q.rope.seq_len, q.length + n));
    for (int64_t i = 0; i < n; ++i) {
      const int64_t id = ids[s * n + i];
      q.compressed_ids.push_back(compressed_id(m, id));
    }
  }
  // One table that reaches every sequence's positions.
  const SequenceState* longest = *std::max_element(
      seqs.begin(), seqs.end(), [](const SequenceState* a, const SequenceState* b) { return a->rope.seq_len < b->rope.seq_len; });

  Tensor h({rows, d}), x({rows, d}), branch({rows, d}), rstd({rows});
  embedding_forward(m.params.embed_tokens, ids, rows, d, h.data());
  if (uses_mhc(cfg)) {
    // V4's streams: the embedding in each, the layers through their mixes,
    // the head's collapse before the final norm.
    Tensor hs, y;
    v4_streams_of(m, h, rows, hs);
    for (int li = 0; li < cfg.num_hidden_layers; ++li) {
      std::vector<AttentionKvCache*> caches(static_cast<size_t>(S));
      for (int64_t s = 0; s < S; ++s) caches[size_t(s)] = &seqs[size_t(s)]->attention[size_t(li)];
      v4_layer_cached(m, li, longest->rope, caches, ids, n, hs);
    }
    v4_collapse_rows(m, hs, rows, y);
    final_out.ensure({rows, d});
    rmsnorm_forward(y.data(), m.params.norm.data(), float(cfg.rms_norm_eps), rows, d, final_out.data(), rstd.data());
    for (SequenceState* q : seqs) q->length += n;
    return;
  }
  for (int li = 0; li < cfg.num_hidden_layers; ++li) {
    const LayerParams& p = m.params.layers[size_t(li)];
    if (p.has_engram) {
      std::vector<EngramDecodeState*> states(static_cast<size_t>(S));
      for (int64_t s = 0; s < S; ++s) states[size_t(s)] = &seqs[size_t(s)]->engram[size_t(li)];
      engram_cached(cfg, m.engram_hash[size_t(li)], p.engram, h.data(), windows.data(), n, states, branch.data());
      add_into(h.data(), branch.data(), rows * d);
    }
    rmsnorm_forward(h.data(), p.input_layernorm.data(), float(cfg.rms_norm_eps), rows, d, x.data(), rstd.data());
    std::vector<AttentionKvCache*> caches(static_cast<size_t>(S));
    for (int64_t s = 0; s < S; ++s) caches[size_t(s)] = &seqs[size_t(s)]->attention[size_t(li)];
    attention_block_cached(cfg, longest->rope, p.attn, x.data(), n, caches, branch.data());
    add_into(h.data(), branch.data(), rows * d);
    rmsnorm_forward(h.data(), p.post_attention_layernorm.data(), float(cfg.rms_norm_eps), rows, d, x.data(),
                    rstd.data());
    if (p.is_moe) {
      MoECache scratch;  // routing of these tokens; nothing carries over
      moe_forward(cfg, p.moe, x.data(), S, n, scratch, branch.data(), nullptr, li, ids);
    } else {
      SwiGLUCache scratch;
      swiglu_ffn_forward(p.mlp, x.data(), rows, scratch, branch.data());
    }
    add_into(h.data(), branch.data(), rows * d);
  }
  final_out.ensure({rows, d});
  rmsnorm_forward(h.data(), m.params.norm.data(), float(cfg.rms_norm_eps), rows, d, final_out.data(), rstd.data());
  for (SequenceState* q : seqs) q->length += n;
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
  const std::vector<SequenceState*> one = {&state};
  prefetch_engram_rows(m, one, ids, n);
  for (int64_t done = 0; done < n;) {
    const int64_t k = std::min(chunk, n - done);
    forward_rows(m, one, ids + done, k, final_out);
    if (which == Logits::All) {
      linear_forward(final_out.data(), lm_head_weight(m), nullptr, k, d, V, logits.data() + done * V);
    } else if (which == Logits::Last && done + k == n) {
      linear_forward(final_out.data() + (k - 1) * d, lm_head_weight(m), nullptr, 1, d, V, logits.data());
    }
    done += k;
  }
}

void decode_step(const Model& m, const std::vector<SequenceState*>& sequences, const int64_t* ids, Tensor& logits) {
  MEMOE_CHECK(!sequences.empty(), "a decode step needs at least one sequence");
  for (size_t i = 0; i < sequences.size(); ++i)
    for (size_t j = i + 1; j < sequences.size(); ++j)
      MEMOE_CHECK(sequences[i] != sequences[j], "a sequence appears twice in one decode step");
  const int64_t S = int64_t(sequences.size()), d = m.config.hidden_size, V = m.config.vocab_size;
  Tensor final_out;
  prefetch_engram_rows(m, sequences, ids, 1);
  forward_rows(m, sequences, ids, 1, final_out);
  logits.ensure({S, V});
  linear_forward(final_out.data(), lm_head_weight(m), nullptr, S, d, V, logits.data());
}

}  // namespace memoe
