#include "io/tokenizer.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <unordered_map>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/text_corpus.h"
#include "io/utf8.h"

namespace memoe {

namespace fs = std::filesystem;
namespace spu = sentencepiece::util;

namespace {

// 4 special pieces + 256 byte pieces come before anything learned.
constexpr int kReservedPieces = 4 + 256;
constexpr int kMaxVocab = 1 << 20;
// sentencepiece drops longer sentences, so longer lines are cut into pieces.
constexpr size_t kMaxSentenceBytes = 16384;
// Larger corpora are sampled down to this many sentences (memory bound);
// the sample depends only on the seed below.
constexpr size_t kMaxTrainSentences = 10'000'000;
constexpr unsigned kTrainSeed = 20240601;

// Feeds the trainer the lines of all inputs, cut to kMaxSentenceBytes at
// code point boundaries. Input errors stop the iteration and are kept, since
// an exception must not unwind through sentencepiece.
class CorpusSentences : public sentencepiece::SentenceIterator {
 public:
  explicit CorpusSentences(const std::vector<std::string>& files) : files_(files) { advance(); }
  bool done() const override { return done_; }
  void Next() override { advance(); }
  const std::string& value() const override { return sentence_; }
  spu::Status status() const override {
    return error_.empty() ? spu::Status() : spu::Status(spu::StatusCode::kInvalidArgument, error_);
  }
  const std::string& error() const { return error_; }

 private:
  void advance() noexcept {
    try {
      done_ = !fetch();
    } catch (const std::exception& e) {
      error_ = e.what();
      done_ = true;
    }
  }
  bool fetch() {
    while (line_pos_ >= line_.size()) {
      if (!reader_) {
        if (next_file_ == files_.size()) return false;
        reader_ = std::make_unique<TextLineReader>(files_[next_file_++]);
      }
      line_pos_ = 0;
      if (!reader_->next(line_)) {
        reader_.reset();
        line_.clear();
      }
    }
    size_t end = std::min(line_.size(), line_pos_ + kMaxSentenceBytes);
    while (end < line_.size() && (static_cast<unsigned char>(line_[end]) & 0xC0) == 0x80) --end;
    sentence_.assign(line_, line_pos_, end - line_pos_);
    line_pos_ = end;
    return true;
  }

  const std::vector<std::string>& files_;
  size_t next_file_ = 0;
  std::unique_ptr<TextLineReader> reader_;
  std::string line_, sentence_;
  size_t line_pos_ = 0;
  bool done_ = false;
  std::string error_;
};

// sentencepiece messages start with "./src/file.cc(123) [condition] "; keep
// the human part, on one line.
std::string clean_message(std::string msg) {
  if (msg.rfind("./", 0) == 0 || msg.find(".cc(") != std::string::npos) {
    const size_t cut = msg.find("] ");
    if (cut != std::string::npos) msg.erase(0, cut + 2);
  }
  std::replace(msg.begin(), msg.end(), '\n', ' ');
  return msg;
}

std::string without_trailing_slashes(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  return path;
}

// Removes a temporary directory unless released.
class TempDir {
 public:
  // Created like any directory (honouring the umask), since it becomes the
  // output directory itself when that does not exist yet.
  TempDir(const fs::path& parent, const std::string& stem) {
    const std::string base = "." + stem + ".tmp-" + unique_temp_suffix() + "-";
    for (int attempt = 0; attempt < 1000 && path_.empty(); ++attempt) {
      std::error_code ec;
      const fs::path candidate = parent / (base + std::to_string(attempt));
      if (fs::create_directory(candidate, ec)) path_ = candidate;
      MEMOE_CHECK(!ec, "cannot create a temporary directory in ", parent.string(), ": ", ec.message());
    }
    MEMOE_CHECK(!path_.empty(), "cannot create a temporary directory in ", parent.string());
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

void rename_or_fail(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  fs::rename(from, to, ec);
  MEMOE_CHECK(!ec, "cannot move ", from.string(), " to ", to.string(), ": ", ec.message());
}

std::unique_ptr<sentencepiece::SentencePieceProcessor> processor_from_bytes(const std::string& bytes,
                                                                            const std::string& what) {
  auto sp = std::make_unique<sentencepiece::SentencePieceProcessor>();
  const spu::Status st = sp->LoadFromSerializedProto(bytes);
  MEMOE_CHECK(st.ok(), what, " is not a valid sentencepiece model (", clean_message(st.message()), ")");
  MEMOE_CHECK(sp->eos_id() >= 0 && sp->eos_id() < sp->GetPieceSize(), what, " has no end-of-text (eos) piece");
  return sp;
}

// The human-readable piece list sentencepiece writes beside a model:
// "piece<TAB>score" per line.
std::string vocab_listing(const sentencepiece::SentencePieceProcessor& sp) {
  std::ostringstream os;
  for (int id = 0; id < sp.GetPieceSize(); ++id) os << sp.IdToPiece(id) << '\t' << sp.GetScore(id) << '\n';
  return os.str();
}

}  // namespace

void Tokenizer::train(const std::vector<std::string>& input_files, int vocab_size, const std::string& out_dir) {
  MEMOE_CHECK(!input_files.empty(), "tokenizer training needs at least one input file");
  MEMOE_CHECK(vocab_size > kReservedPieces && vocab_size <= kMaxVocab, "tokenizer vocabulary size must be in (",
              kReservedPieces, ", ", kMaxVocab, "] (4 special + 256 byte pieces come first), got ", vocab_size);
  const fs::path out = without_trailing_slashes(out_dir);
  MEMOE_CHECK(!out.empty(), "tokenizer output directory is empty");
  MEMOE_CHECK(!fs::exists(out) || fs::is_directory(out), out.string(), " exists and is not a directory");

  // Check every input before the (possibly long) training starts.
  CorpusSentences check(input_files);
  while (!check.done()) check.Next();
  MEMOE_CHECK(check.error().empty(), check.error());

  const std::unordered_map<std::string, std::string> args = {
      {"model_type", "bpe"},
      {"vocab_size", std::to_string(vocab_size)},
      {"byte_fallback", "true"},
      // Rare characters (the last 0.05% of occurrences) are left to byte
      // pieces instead of each taking a vocabulary slot.
      {"character_coverage", "0.9995"},
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},
      {"add_dummy_prefix", "false"},
      {"allow_whitespace_only_pieces", "true"},  // indentation runs
      {"split_digits", "true"},                  // numbers digit by digit
      {"max_sentence_length", std::to_string(kMaxSentenceBytes)},
      {"input_sentence_size", std::to_string(kMaxTrainSentences)},
      {"shuffle_input_sentence", "true"},
      {"num_threads", "1"},
      {"pad_id", "0"},
      {"unk_id", "1"},
      {"bos_id", "2"},
      {"eos_id", "3"},
      {"pad_piece", "<pad>"},
      {"unk_piece", "<unk>"},
      {"bos_piece", "<s>"},
      {"eos_piece", "</s>"},
      {"minloglevel", "2"},  // errors come back as a status
  };
  sentencepiece::SetRandomGeneratorSeed(kTrainSeed);
  CorpusSentences sentences(input_files);
  std::string model_bytes;
  const spu::Status st = sentencepiece::SentencePieceTrainer::Train(args, &sentences, &model_bytes);
  MEMOE_CHECK(sentences.error().empty(), sentences.error());
  MEMOE_CHECK(st.ok(), "cannot train a tokenizer with vocabulary size ", vocab_size, ": ",
              clean_message(st.message()));

  // The result must have the promised layout before it replaces anything.
  const auto sp = processor_from_bytes(model_bytes, "the trained tokenizer");
  MEMOE_CHECK(sp->GetPieceSize() == vocab_size && sp->pad_id() == kPadId && sp->unk_id() == kUnkId &&
                  sp->bos_id() == kBosId && sp->eos_id() == kEosId && sp->IsByte(kReservedPieces - 1),
              "the trained tokenizer has an unexpected layout (sentencepiece version?)");

  // Write both files into a temporary directory beside out, then rename.
  fs::path parent = out.parent_path();
  if (parent.empty()) parent = ".";
  std::error_code ec;
  fs::create_directories(parent, ec);
  MEMOE_CHECK(!ec, "cannot create ", parent.string(), ": ", ec.message());
  TempDir tmp(parent, out.filename().string());
  const fs::path model = tmp.path() / kModelFile, vocab = tmp.path() / kVocabFile;
  write_file_atomic(model.string(), model_bytes);
  write_file_atomic(vocab.string(), vocab_listing(*sp));
  if (!fs::exists(out)) {
    fs::rename(tmp.path(), out, ec);
    if (!ec) return;  // TempDir's cleanup finds nothing left to remove
  }
  // out exists: move the files in, the model last (it is what load reads).
  MEMOE_CHECK(fs::is_directory(out), out.string(), " exists and is not a directory");
  rename_or_fail(vocab, out / kVocabFile);
  rename_or_fail(model, out / kModelFile);
}

Tokenizer Tokenizer::load(const std::string& dir) {
  const fs::path model = fs::path(dir) / kModelFile;
  MEMOE_CHECK(fs::is_regular_file(model), "no tokenizer in ", dir, ": ", model.string(), " not found");
  std::ifstream in(model, std::ios::binary);
  MEMOE_CHECK(in.good(), "cannot open ", model.string());
  const std::string bytes(std::istreambuf_iterator<char>(in), {});
  MEMOE_CHECK(!in.bad(), "cannot read ", model.string());
  return Tokenizer(processor_from_bytes(bytes, model.string()));
}

Tokenizer::Tokenizer(std::unique_ptr<sentencepiece::SentencePieceProcessor> processor) : sp_(std::move(processor)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

void Tokenizer::check_id(int64_t id) const {
  MEMOE_CHECK(id >= 0 && id < vocab_size(), "token id ", id, " is outside the tokenizer's vocabulary [0, ",
              vocab_size(), ")");
}

std::vector<int32_t> Tokenizer::encode(const std::string& text) const {
  const size_t bad = find_invalid_utf8(text);
  MEMOE_CHECK(bad == std::string_view::npos, "text to encode is not valid UTF-8 (byte offset ", bad, ")");
  std::vector<int> ids;
  const spu::Status st = sp_->Encode(text, &ids);
  MEMOE_CHECK(st.ok(), "cannot encode text: ", clean_message(st.message()));
  return std::vector<int32_t>(ids.begin(), ids.end());
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  for (int32_t id : ids) check_id(id);
  std::string text;
  const spu::Status st = sp_->Decode(std::vector<int>(ids.begin(), ids.end()), &text);
  MEMOE_CHECK(st.ok(), "cannot decode token ids: ", clean_message(st.message()));
  return text;
}

int Tokenizer::vocab_size() const { return sp_->GetPieceSize(); }
int Tokenizer::eos_id() const { return sp_->eos_id(); }
int Tokenizer::pad_id() const { return sp_->pad_id(); }

std::string Tokenizer::piece(int id) const {
  check_id(id);
  return sp_->IdToPiece(id);
}

float Tokenizer::score(int id) const {
  check_id(id);
  return sp_->GetScore(id);
}

Tokenizer::PieceKind Tokenizer::kind(int id) const {
  check_id(id);
  if (sp_->IsUnknown(id)) return PieceKind::unknown;
  if (sp_->IsControl(id)) return PieceKind::control;
  if (sp_->IsByte(id)) return PieceKind::byte;
  if (sp_->IsUnused(id)) return PieceKind::unused;
  return PieceKind::normal;
}

int Tokenizer::bos_id() const { return sp_->bos_id(); }
int Tokenizer::unk_id() const { return sp_->unk_id(); }

std::string Tokenizer::decode_one(int id) const {
  check_id(id);
  const std::string& p = sp_->IdToPiece(id);
  if (sp_->IsByte(id)) {  // "<0xAB>"
    MEMOE_CHECK(p.size() == 6 && p.rfind("<0x", 0) == 0, "byte piece ", id, " is malformed: ", p);
    int byte = 0;
    const auto parsed = std::from_chars(p.data() + 3, p.data() + 5, byte, 16);
    MEMOE_CHECK(parsed.ec == std::errc() && parsed.ptr == p.data() + 5, "byte piece ", id, " is malformed: ", p);
    return byte < 0x80 ? std::string(1, char(byte)) : std::string(kReplacementChar);
  }
  if (sp_->IsControl(id) || sp_->IsUnknown(id) || sp_->IsUnused(id)) return p;
  static constexpr std::string_view kSpaceMark = "\xE2\x96\x81";  // U+2581 "▁"
  std::string text;
  text.reserve(p.size());
  for (size_t i = 0; i < p.size();) {
    if (p.compare(i, kSpaceMark.size(), kSpaceMark) == 0) {
      text += ' ';
      i += kSpaceMark.size();
    } else {
      text += p[i++];
    }
  }
  return text;
}

void Tokenizer::save(const std::string& dir) const {
  write_file_atomic((fs::path(dir) / kModelFile).string(), sp_->serialized_model_proto());
}

}  // namespace memoe
