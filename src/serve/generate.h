// Generation: a prompt's ids in, sampled tokens out one at a time, and the
// incremental text of what has been generated so far. The CLI and (later)
// the server both drive this loop.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "io/tokenizer.h"
#include "model/model.h"
#include "serve/sampler.h"

namespace memoe {

// Training streams put the end-of-text id before every document but the
// first, so it leads the prompt: the model then reads the prompt as the
// start of a document (and an empty prompt still has a token to go on).
std::vector<int64_t> prompt_ids(const Tokenizer& tok, const std::string& prompt);

struct GenerateOptions {
  int64_t max_tokens = 64;
  int64_t prefill_chunk = 256;  // prompt tokens per prefill pass
  int64_t max_context = 0;      // prompt + generated tokens at most; 0: the model's max_position_embeddings
  int64_t stop_id = -1;       // generation ends when this id is drawn (not emitted); -1: none
  int64_t emit_vocab = 0;     // ids >= this are vocabulary padding, never drawn; 0: the whole vocabulary
};

enum class FinishReason { Stop, Length };

struct GenerateResult {
  std::vector<int32_t> tokens;
  FinishReason finish = FinishReason::Length;
  double prefill_s = 0, decode_s = 0;  // wall time of the prompt's prefill and of the decode steps
  int64_t cache_bytes = 0;             // the sequence's cache at the end
};

// The checks generate() makes before it starts: options in range, a prompt
// that is not empty, inside the vocabulary and the context. One line each.
void check_generate_request(const Model& m, const std::vector<int64_t>& ids, const GenerateOptions& options);

// Samples up to max_tokens after `ids`, calling on_token with each new id as
// it is drawn: the prompt is prefilled into a KV cache in chunks, then each
// token is decoded through it. Generation ends (finish Length) when the
// context is full; a prompt longer than the context is an error.
GenerateResult generate(const Model& m, std::vector<int64_t> ids, const GenerateOptions& options, Sampler& sampler,
                        const std::function<void(int32_t)>& on_token = {});

// The text of the tokens so far, released as it becomes printable: an
// incomplete UTF-8 sequence at the end decodes to U+FFFD until its remaining
// bytes arrive, so such a tail is held back.
class TextStream {
 public:
  explicit TextStream(const Tokenizer& tok) : tok_(tok) {}
  // Adds a token; returns the newly printable text (often empty).
  std::string push(int32_t token);
  // Whatever is still held back (at the end of generation).
  std::string finish();

 private:
  const Tokenizer& tok_;
  std::vector<int32_t> tokens_;
  std::string text_;
  size_t released_ = 0;
};

}  // namespace memoe
