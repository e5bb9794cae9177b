// Data parallelism: every rank holds the whole model and computes the
// gradients of its part of the global batch; these make the ranks'
// gradients and parameters the global ones.
#pragma once
#include <cstdint>
#include <vector>

#include "dist/communicator.h"
#include "model/model.h"

namespace memoe {

// The gradient of one optimizer step: the sum, over its micro-batches in
// order and within each over the ranks in rank order, of each rank's
// gradient of its part of the micro-batch. Summed in exactly that order
// on every layout, so R ranks taking B/R sequences each give the same bits
// as one process taking the same sequences as R micro-batches of B/R
// (--batch B/R --grad-accum R): the equivalence tests compare bit for bit.
// Any other order drifts, because training amplifies rounding (top-k
// routing flips, the Engram gate's square root near zero): summing 4
// sequences at once or as 2 x 2 in one process differ by 1e-4 in the
// gradient norm within 8 steps of the tiny preset.
//
// Dense gradients travel flat: each rank owns one contiguous shard of
// them, receives every rank's copy of its shard (a reduce-scatter whose
// sums it does itself, in rank order) and, at the end of the step, the
// shards are gathered back. Engram table gradients travel as (row id, row)
// pairs only, merged per row in the same order.
//
// In a world of one the sum runs in `out` itself, with no flat buffers.
class GradientSum {
 public:
  // out: the gradient struct (model.make_gradients()) the step's sum goes to.
  GradientSum(Communicator& comm, ModelParams& out);

  void begin_step();
  // Adds every rank's gradient of one micro-batch (a collective: all ranks
  // call it once per micro-batch). micro must not be `out`.
  void add(ModelParams& micro);
  // The step's sum, times `scale`, in `out` on every rank.
  void finish(float scale);

 private:
  Communicator& comm_;
  ModelParams& out_;
  bool first_ = true;             // no micro-batch added yet this step (single process)
  int64_t total_ = 0;             // dense values in all
  std::vector<float> flat_;       // one micro-batch's dense values, packed
  std::vector<float> received_;   // every rank's copy of this rank's shard
  std::vector<float> shard_;      // this rank's shard of the running sum
  std::vector<SparseRowGrad> tables_;  // running sums of the table gradients, in visit order
};

// Every parameter (Engram tables included) becomes rank 0's, so the
// replicas start equal whatever each rank loaded or initialised.
void broadcast_parameters(Communicator& comm, ModelParams& params);

}  // namespace memoe
