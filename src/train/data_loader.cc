#include "train/data_loader.h"

#include "core/error.h"
#include "train/counter_hash.h"

namespace memoe {

namespace {
constexpr uint64_t kWindowDomain = 0x77696E646F77ull;  // "window"
}

DataLoader::DataLoader(const std::string& data_dir, const std::string& split, int64_t seq_len, uint64_t seed)
    : reader_(data_dir, split), seq_len_(seq_len), seed_(seed) {
  MEMOE_CHECK(seq_len > 0, "data loader: seq_len must be positive, got ", seq_len);
  MEMOE_CHECK(reader_.size() > seq_len, data_dir, ": split '", split, "' has ", reader_.size(),
              " tokens, fewer than seq_len + 1 = ", seq_len + 1);
}

int64_t DataLoader::window_start(uint64_t index) const {
  const uint64_t starts = uint64_t(reader_.size() - seq_len_);  // windows that fit
  return int64_t(uniform_below(counter_hash(seed_, kWindowDomain, index), starts));
}

void DataLoader::next_batch(int64_t batch, int64_t* ids) { next_batch_part(batch, 0, batch, ids); }

void DataLoader::next_batch_part(int64_t batch, int64_t first, int64_t count, int64_t* ids) {
  MEMOE_CHECK(batch > 0, "data loader: batch must be positive, got ", batch);
  MEMOE_CHECK(first >= 0 && count > 0 && first + count <= batch, "data loader: windows [", first, ", ",
              first + count, ") are not part of a batch of ", batch);
  for (int64_t b = 0; b < count; ++b)
    reader_.read(window_start(cursor_ + uint64_t(first + b)), seq_len_ + 1, ids + b * (seq_len_ + 1));
  cursor_ += uint64_t(batch);  // only after every read succeeded
}

int64_t DataLoader::eval_window_count() const { return (reader_.size() - 1) / seq_len_; }

void DataLoader::eval_batch(int64_t first, int64_t batch, int64_t* ids) const {
  const int64_t count = eval_window_count();
  MEMOE_CHECK(batch > 0, "data loader: batch must be positive, got ", batch);
  MEMOE_CHECK(first >= 0 && first <= count - batch, "data loader: eval windows [", first, ", ", first + batch,
              ") are outside the ", count, " windows of split '", reader_.split(), "'");
  for (int64_t b = 0; b < batch; ++b) reader_.read((first + b) * seq_len_, seq_len_ + 1, ids + b * (seq_len_ + 1));
}

}  // namespace memoe
