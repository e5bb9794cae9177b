// Held-out loss: mean next-token cross-entropy over the first windows of a
// split, in order (the same windows every time, so evaluations compare).
#pragma once
#include <functional>
#include <string>

#include "model/model.h"
#include "train/data_loader.h"

namespace memoe {

struct HeldoutResult {
  double loss = 0;
  double perplexity = 0;
  int64_t tokens = 0;       // the targets scored
  int64_t windows = 0;      // of seq_len tokens each, from the split's first on
  int64_t seq_len = 0;
  bool whole_split = false; // every window of the split
};
// What an evaluation covered, for the lines people read: "the whole val
// split, 169 windows of 256 tokens" or "the first 32 windows of 256 tokens
// of the val split". The trainer's last evaluation and `memoe eval`
// both read the whole split by default, so their figures are one measurement.
std::string heldout_scope(const HeldoutResult& r, const std::string& split);

// max_windows <= 0 means every window of the split. `scratch` holds the
// activations (pass the training loop's, so evaluation allocates no second set).
HeldoutResult heldout_loss(const Model& model, const DataLoader& data, int64_t batch, int64_t max_windows,
                           ModelState& scratch);

// The parts of a held-out loss: summed token losses and their count over
// windows first .. first + count - 1 (a data-parallel rank's share; the
// ranks' sums add up to the whole evaluation's).
struct HeldoutSums {
  double loss_sum = 0;
  int64_t tokens = 0;
};
// How many of the split's windows an evaluation of max_windows reads.
int64_t heldout_windows(const DataLoader& data, int64_t max_windows);
HeldoutSums heldout_sums(const Model& model, const DataLoader& data, int64_t batch, int64_t first, int64_t count,
                         ModelState& scratch);
// The same over the caller's forward pass: the mean cross-entropy of ids
// [batch, seq_len] against targets (a pipeline stage's forward_loss).
using BatchLoss = std::function<double(const int64_t* ids, const int64_t* targets, int64_t batch, int64_t seq_len)>;
HeldoutSums heldout_sums(const DataLoader& data, int64_t batch, int64_t first, int64_t count, const BatchLoss& loss);
// The result of the split's first `windows` windows from their sums.
HeldoutResult heldout_result(const HeldoutSums& sums, const DataLoader& data, int64_t windows);

}  // namespace memoe
