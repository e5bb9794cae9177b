// The project's tokenizer: a byte-fallback BPE sentencepiece model stored as
// DIR/tokenizer.model (plus DIR/tokenizer.vocab, a readable piece list).
//
// Trained models have fixed special ids: 0 "<pad>", 1 "<unk>", 2 "<s>" (bos),
// 3 "</s>" (eos, also the end-of-text separator between documents), then the
// 256 byte pieces "<0x00>".."<0xFF>", then the learned pieces. Text is kept
// exactly recoverable: no normalisation (identity rule), no whitespace
// collapsing and no dummy leading space, so decode(encode(s)) == s for any
// valid UTF-8 s, and encoding two texts one after the other decodes to their
// concatenation. Characters the model lacks (newlines among them: training
// sees lines) are spelled with byte pieces, so nothing maps to <unk>.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace memoe {

class Tokenizer {
 public:
  static constexpr int kPadId = 0, kUnkId = 1, kBosId = 2, kEosId = 3;
  static constexpr const char* kModelFile = "tokenizer.model";
  static constexpr const char* kVocabFile = "tokenizer.vocab";

  // Trains on .txt / .jsonl files (io/text_corpus.h) and writes
  // out_dir/tokenizer.{model,vocab}. Reproducible: same inputs and vocab
  // size give the same bytes. Inputs are checked before training starts; a
  // failure leaves out_dir as it was (the model is built in a temporary
  // directory beside out_dir and renamed into place).
  static void train(const std::vector<std::string>& input_files, int vocab_size, const std::string& out_dir);

  // Loads dir/tokenizer.model; errors if it is missing or not a valid model.
  static Tokenizer load(const std::string& dir);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Token ids of UTF-8 text (no bos/eos added); invalid UTF-8 is an error.
  std::vector<int32_t> encode(const std::string& text) const;
  // Text of ids; control ids (pad, bos, eos) decode to nothing, byte pieces
  // to their bytes, incomplete UTF-8 to U+FFFD. Ids out of range: error.
  std::string decode(const std::vector<int32_t>& ids) const;

  int vocab_size() const;
  int eos_id() const;
  int pad_id() const;  // -1 if a loaded foreign model has none
  // The raw piece string, e.g. "▁the", "<0x0A>", "</s>".
  std::string piece(int id) const;
  // The piece's score (a BPE model's merge priority: higher merges first)
  // and kind, as sentencepiece records them (what GGUF's llama tokenizer
  // carries: tokens, scores, token types).
  float score(int id) const;
  enum class PieceKind { normal, unknown, control, unused, byte };
  PieceKind kind(int id) const;
  int bos_id() const;
  int unk_id() const;
  // The decoding of [id] alone (spec §5.1): "▁" reads as a space; a byte
  // piece decodes to its byte, or to U+FFFD when that byte alone is not
  // complete UTF-8 (0x80..0xFF). Special pieces (pad, unk, bos, eos) read as
  // their piece text ("<pad>", "</s>", ...), as Hugging Face's
  // decode(skip_special_tokens=False) gives them, so each keeps its own
  // Engram key.
  std::string decode_one(int id) const;

  // Writes the model as dir/tokenizer.model (atomically); dir must exist.
  void save(const std::string& dir) const;

 private:
  explicit Tokenizer(std::unique_ptr<sentencepiece::SentencePieceProcessor> processor);
  void check_id(int64_t id) const;

  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
};

}  // namespace memoe
