#include "train/evaluate.h"

#include <cmath>
#include <vector>

#include "core/error.h"
#include "train/batch.h"

namespace memoe {

HeldoutResult heldout_loss(const Model& model, const DataLoader& data, int64_t batch, int64_t max_windows,
                           ModelState& state) {
  const int64_t L = data.seq_len();
  int64_t windows = data.eval_window_count();
  if (max_windows > 0) windows = std::min(windows, max_windows);
  MEMOE_CHECK(windows > 0, "held-out split has no window of ", L + 1, " tokens");
  std::vector<int64_t> win;
  Batch batch_data;
  double total = 0;
  int64_t tokens = 0;
  for (int64_t first = 0; first < windows; first += batch) {
    const int64_t b = std::min(batch, windows - first);
    win.resize(size_t(b * (L + 1)));
    data.eval_batch(first, b, win.data());
    batch_data.from_windows(win.data(), b, L);
    const double loss =
        model_loss_and_grad(model, batch_data.ids.data(), batch_data.targets.data(), b, L, state, nullptr);
    total += (loss - state.aux_loss) * double(b * L);
    tokens += b * L;
  }
  HeldoutResult r;
  r.tokens = tokens;
  r.loss = total / double(tokens);
  r.perplexity = std::exp(r.loss);
  return r;
}

}  // namespace memoe
