// Data parallelism: every rank holds the whole model and computes the
// gradients of its part of the global batch; these make the ranks'
// gradients and parameters the global ones.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "parallel/communicator.h"
#include "model/model.h"

namespace memoe {

struct DataParallelOptions {
  // ZeRO-1: each rank keeps optimizer moments for, and updates, only its
  // shard of every bucket and its rows of every Engram table; the updated
  // weights are then gathered (gather_parameters).
  bool zero = false;
  // Send each bucket as soon as the backward pass has finished its tensors
  // (on_backward_progress), rather than all after the backward pass.
  bool overlap = true;
  // Gradient values per bucket: whole tensors until at least this many (the
  // last bucket, the embedding's end, may hold fewer).
  int64_t bucket_values = int64_t(2) << 20;
  // The routed experts' gradients are summed elsewhere (expert parallel:
  // parallel/expert_parallel.h) and stay out of the buckets.
  bool experts_apart = false;
  // Each rank holds only its rows of every Engram table (parallel/engram_shard.h):
  // its optimizer owns those rows, ZeRO-1 or not, and no rank gathers
  // another's updated rows.
  bool tables_sharded = false;
};

// The gradient of one optimizer step: the sum, over its micro-batches in
// order and within each over the ranks in rank order, of each rank's
// gradient of its part of the micro-batch. Summed in exactly that order
// on every layout, bucket size and overlap, so R ranks taking B/R sequences
// each give the same bits as one process taking the same sequences as R
// micro-batches of B/R (--batch B/R --grad-accum R): the equivalence tests
// compare bit for bit. Any other order drifts, because training amplifies
// rounding (top-k routing flips, the Engram gate's square root near zero):
// summing 4 sequences at once or as 2 x 2 in one process differ by 1e-4 in
// the gradient norm within 8 steps of the tiny preset.
//
// Dense gradients travel flat, in buckets: runs of whole tensors in
// backward order (the head first, the embedding last), each cut into one
// contiguous shard per rank at multiples of kReduceChunk within its tensors.
// A rank receives every rank's copy of its shard of each bucket (a
// reduce-scatter whose sums it does itself, in rank order). Without ZeRO
// the shards are gathered back at the end of the step (together an
// all-reduce); with ZeRO-1 each rank keeps its shard, updates it, and the
// weights are gathered instead. Engram table gradients travel as (row id,
// row) pairs only, merged per row in the same order.
//
// In a world of one the sum runs in `out` itself, with no flat buffers.
class GradientSum {
 public:
  // out: the gradient struct (model.make_gradients()) the step's sum goes to.
  GradientSum(Communicator& comm, const Model& model, ModelParams& out, DataParallelOptions options = {});
  ~GradientSum();

  // The parameter slices this rank's optimizer owns: every parameter whole,
  // or with ZeRO-1 this rank's shard of each bucket and its rows of each
  // table, in visit order.
  std::vector<ParamSlice> owned_slices() const;

  void begin_step();
  // During the backward pass of `micro` (model_loss_and_grad's hook): the
  // gradients of `part` and of every part after it are final, so the
  // buckets they complete are sent now (with overlap on).
  void on_backward_progress(ModelParams& micro, int part);
  // Adds every rank's gradient of one micro-batch (a collective: all ranks
  // call it once per micro-batch). micro must not be `out`.
  void add(ModelParams& micro);
  // The step's sum, times `scale`, in `out` on every rank (with ZeRO-1:
  // only the owned elements and table rows are meaningful).
  void finish(float scale);
  // ZeRO-1 over several ranks, after finish(): the global norm of the
  // step's gradient from the ranks' shards, each element and table row
  // counted once: the same bits as gradient_global_norm on the whole sum.
  // terms: where the addends go as well (pipeline stages add theirs up).
  double sharded_global_norm(GradientNormTerms* terms = nullptr);
  // ZeRO-1, after the optimizer step: every rank's updated shard of the
  // weights (and its updated table rows) to every rank. Otherwise nothing.
  void gather_parameters(ModelParams& params);

  // Seconds this rank spent waiting for gradient communication since the
  // last begin_step (what the overlap hides).
  double wait_seconds() const { return wait_s_; }
  // Bytes of the flat buffers this rank holds for the exchange.
  int64_t buffer_bytes() const;
  int buckets() const { return int(buckets_.size()); }

 private:
  struct Bucket;
  void start_bucket(const std::vector<Tensor*>& micro_dense, size_t b);

  Communicator& comm_;
  const Model& model_;
  ModelParams& out_;
  DataParallelOptions options_;
  bool first_ = true;  // no micro-batch added yet this step (single process)
  std::vector<std::unique_ptr<Bucket>> buckets_;  // in sending order: the head first
  std::vector<SparseRowGrad> tables_;             // running sums of the table gradients, in visit order
  double wait_s_ = 0;
};

// Every parameter (Engram tables included) becomes rank 0's, so the
// replicas start equal whatever each rank loaded or initialised. Routed
// experts too unless skip_experts (an expert-parallel rank holds a shard;
// ExpertParallel::broadcast_experts).
void broadcast_parameters(Communicator& comm, ModelParams& params, bool skip_experts = false);

}  // namespace memoe
