#include "train/evaluate.h"

#include <cmath>
#include <vector>

#include "core/error.h"
#include "train/batch.h"

namespace memoe {

int64_t heldout_windows(const DataLoader& data, int64_t max_windows) {
  int64_t windows = data.eval_window_count();
  if (max_windows > 0) windows = std::min(windows, max_windows);
  MEMOE_CHECK(windows > 0, "held-out split has no window of ", data.seq_len() + 1, " tokens");
  return windows;
}

HeldoutSums heldout_sums(const DataLoader& data, int64_t batch, int64_t first, int64_t count, const BatchLoss& loss) {
  const int64_t L = data.seq_len();
  std::vector<int64_t> win;
  Batch batch_data;
  HeldoutSums sums;
  for (int64_t at = first; at < first + count; at += batch) {
    const int64_t b = std::min(batch, first + count - at);
    win.resize(size_t(b * (L + 1)));
    data.eval_batch(at, b, win.data());
    batch_data.from_windows(win.data(), b, L);
    sums.loss_sum += loss(batch_data.ids.data(), batch_data.targets.data(), b, L) * double(b * L);
    sums.tokens += b * L;
  }
  return sums;
}

HeldoutSums heldout_sums(const Model& model, const DataLoader& data, int64_t batch, int64_t first, int64_t count,
                         ModelState& state) {
  return heldout_sums(data, batch, first, count,
                      [&](const int64_t* ids, const int64_t* targets, int64_t b, int64_t L) {
                        return model_loss_and_grad(model, ids, targets, b, L, state, nullptr) - state.aux_loss;
                      });
}

HeldoutResult heldout_result(const HeldoutSums& sums, const DataLoader& data, int64_t windows) {
  HeldoutResult r;
  r.tokens = sums.tokens;
  r.loss = sums.loss_sum / double(std::max<int64_t>(1, sums.tokens));
  r.perplexity = std::exp(r.loss);
  r.windows = windows;
  r.seq_len = data.seq_len();
  r.whole_split = windows == data.eval_window_count();
  return r;
}

HeldoutResult heldout_loss(const Model& model, const DataLoader& data, int64_t batch, int64_t max_windows,
                           ModelState& state) {
  const int64_t windows = heldout_windows(data, max_windows);
  return heldout_result(heldout_sums(model, data, batch, 0, windows, state), data, windows);
}

std::string heldout_scope(const HeldoutResult& r, const std::string& split) {
  const std::string windows = std::to_string(r.windows) + " windows of " + std::to_string(r.seq_len) + " tokens";
  return r.whole_split ? "the whole " + split + " split, " + windows
                       : "the first " + windows + " of the " + split + " split";
}

}  // namespace memoe
