// Training and evaluation batches from a token data directory (see
// io/token_shards.h). Shards are memory-mapped, so the loader's memory does
// not depend on the corpus size.
#pragma once
#include <cstdint>
#include <string>

#include "io/token_shards.h"

namespace memoe {

class DataLoader {
 public:
  // Opens `split` of `data_dir` (validating it) for windows of seq_len + 1
  // tokens: seq_len inputs plus the next-token targets shifted by one.
  DataLoader(const std::string& data_dir, const std::string& split, int64_t seq_len, uint64_t seed);

  // Fills ids[batch, seq_len + 1] with random windows. Each window's start
  // is uniform over the split's seq_len + 1-token windows (they may span
  // documents; eot separates them) and depends only on (seed, cursor); the
  // cursor advances by one per window.
  void next_batch(int64_t batch, int64_t* ids);
  // One rank's part of a global batch of `batch` windows: ids[count,
  // seq_len + 1] gets windows first .. first + count - 1 of it (a
  // data-parallel rank r of R takes first = r * batch / R), and the cursor
  // advances past the whole batch, as next_batch(batch) would.
  void next_batch_part(int64_t batch, int64_t first, int64_t count, int64_t* ids);

  // The whole sampling state: resuming with the same seed and cursor gives
  // the same future windows, whatever batch sizes are used.
  uint64_t cursor() const { return cursor_; }
  void set_cursor(uint64_t cursor) { cursor_ = cursor; }

  // First token of the index-th random window.
  int64_t window_start(uint64_t index) const;

  // Evaluation: window i holds tokens [i * seq_len, i * seq_len + seq_len + 1),
  // so the windows' targets cover the split once, in order, without overlap.
  int64_t eval_window_count() const;
  // Fills ids[batch, seq_len + 1] with eval windows first .. first + batch - 1.
  void eval_batch(int64_t first, int64_t batch, int64_t* ids) const;

  int64_t total_tokens() const { return reader_.size(); }
  int64_t seq_len() const { return seq_len_; }
  uint64_t seed() const { return seed_; }
  const TokenSplitReader& reader() const { return reader_; }

 private:
  TokenSplitReader reader_;
  int64_t seq_len_;
  uint64_t seed_;
  uint64_t cursor_ = 0;
};

}  // namespace memoe
