// Pipeline parallelism: the layers split into P contiguous stages, the
// embedding on the first, the final norm and LM head on the last; each
// data-parallel replica is a pipe of P ranks, one per stage. A step's
// micro-batches run the 1F1B schedule (PipeDream-flush, as Megatron-Core's
// non-interleaved schedule): stage s starts P - s - 1 forward passes, then
// alternates one forward and one backward, then drains the backward passes.
// Activations [micro, seq, d] go to the next stage and their gradients to
// the previous one point to point (MPI_Isend / MPI_Irecv): sends never
// block the sender, so the schedule cannot deadlock, and a stage computes
// while its last output is still in flight.
//
// The model code sees a range of layers (model/model.h's layer-range entry
// points); a stage's ModelParams hold only its layers (ModelParams::
// hold_layers). With tied embeddings the last stage keeps a copy of the
// embedding as its head's weight: it sends the head's part of each
// micro-batch's embedding gradient to the first stage, which takes it as
// the start of that micro-batch's embedding gradient (one process's order
// of addition, so one process's bits; V x d values a micro-batch, where a
// sum over the step would send one but lose the bits); after the optimizer
// step the first stage sends the updated embedding back.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "parallel/communicator.h"
#include "model/model.h"

namespace memoe {

// Stage s holds layers [cuts[s], cuts[s + 1]); cuts has P + 1 entries.
using StageCuts = std::vector<int>;

// The contiguous split of layers with costs `layer_cost` into `stages`
// stages (the head's cost on the last) whose most expensive stage is the
// cheapest possible; ties go to the split with the earlier cuts. Every
// stage holds at least one layer.
StageCuts balance_stages(const std::vector<double>& layer_cost, double head_cost, int stages);
// "--pp-layers 2,1,1": layers per stage, which must add up to the model's.
StageCuts parse_stage_layers(const std::string& counts, int layers, int stages);
// The stages of a config: --pp-layers when given, else balanced by the
// planner's FLOPs per layer (model/param_count.h) at seq_len.
StageCuts stage_cuts(const ModelConfig& cfg, int64_t seq_len, int stages, const std::string& pp_layers);
std::string stage_cuts_string(const StageCuts& cuts);  // "0..1 | 2..2" (inclusive layer ranges)

// Measured costs: seconds of one forward and backward pass of each layer
// and of the head (norm, LM head, loss), the least of `repeats` passes
// over a micro-batch of [batch, seq_len] pseudo-random token ids, on this
// process with the whole model (before a stage drops the other layers).
struct LayerSeconds {
  std::vector<double> layers;
  double head = 0;
};
LayerSeconds measure_layer_seconds(const Model& model, int64_t batch, int64_t seq_len, int repeats = 3);

struct PipeOp {
  bool forward = true;
  int micro = 0;
};
// Stage `stage`'s order of forward and backward passes over m micro-batches.
std::vector<PipeOp> one_f_one_b(int stages, int stage, int micro_batches);
// The idle share of a 1F1B step with equal stages: (p - 1) / (m + p - 1).
double ideal_bubble(int stages, int micro_batches);

// What the trainer does around each pass of a step (all optional).
struct PipeHooks {
  std::function<void(int micro)> before_forward;  // e.g. start the sharded tables' row fetch
  std::function<void(int micro, const ModelState&)> after_forward;  // read its expert loads, gate sums
  std::function<void(int micro)> before_backward;  // zero the micro-batch gradient
  GradientReadyHook on_ready;                      // the data-parallel overlap
  std::function<void(int micro)> after_backward;   // add the micro-batch gradient to the step's sum
};

// One micro-batch of this data-parallel rank: ids and targets [batch, seq_len].
struct PipeMicro {
  const int64_t* ids = nullptr;
  const int64_t* targets = nullptr;
  int64_t batch = 0, seq_len = 0;
};

class Pipeline {
 public:
  // pipe: the ranks of one data-parallel replica, rank s holding stage s
  // (a world of one: the whole model here). The model's params must hold
  // the stage's layers already.
  Pipeline(Communicator& pipe, const Model& model, StageCuts cuts);
  ~Pipeline();

  int stages() const { return int(cuts_.size()) - 1; }
  int stage() const { return stage_; }
  bool is_first() const { return stage_ == 0; }
  bool is_last() const { return stage_ == stages() - 1; }
  int first_layer() const { return cuts_[size_t(stage_)]; }
  int last_layer() const { return cuts_[size_t(stage_) + 1]; }
  const StageCuts& cuts() const { return cuts_; }

  // Forward and backward over every micro-batch in the 1F1B order, the
  // gradients added into micro_grads (which the hooks zero and consume).
  // Returns each micro-batch's loss as this stage sees it: the last stage's
  // cross-entropy plus this stage's balance loss (add them over the stages).
  std::vector<double> train_step(const std::vector<PipeMicro>& micro, ModelParams& micro_grads, const PipeHooks& hooks);
  // A forward pass without gradients: the mean cross-entropy on the last
  // stage, 0 on the others.
  double forward_loss(const PipeMicro& micro);
  // Tied embeddings, after the optimizer step: the first stage's updated
  // embedding to the last stage (which refreshes its bf16 copy).
  void sync_tied_embedding(ModelParams& params);

  // Seconds since the last reset this rank spent waiting for a neighbour's
  // activations or gradients (the bubble, and transfers not hidden), and
  // inside its passes.
  double wait_seconds() const { return wait_s_; }
  double compute_seconds() const { return compute_s_; }
  // The wall time of train_step (the schedule, its hooks included): the
  // span the bubble is a share of.
  double schedule_seconds() const { return schedule_s_; }
  int64_t sent_bytes() const { return sent_bytes_; }
  void reset_counters() { wait_s_ = compute_s_ = schedule_s_ = 0, sent_bytes_ = 0; }
  // Bytes of the activations of the micro-batches in flight on this stage
  // are in its ModelStates; this is their count.
  int states() const { return int(states_.size()); }

 private:
  struct Slot;
  bool tied_across() const;
  void forward(const PipeMicro& micro, Slot& slot);
  void receive(float* x, int64_t n, int from, int tag);
  void send(Slot& slot, const float* x, int64_t n, int to, int tag);

  Communicator& pipe_;
  const Model& model_;
  StageCuts cuts_;
  int stage_ = 0;
  std::vector<std::unique_ptr<Slot>> states_;  // one per micro-batch in flight
  // The last stage's head parts of the tied embedding's gradient in flight
  // to the first stage (at most one per stage between them).
  struct TiedPart {
    std::vector<float> values;
    std::unique_ptr<Communicator::Pending> pending;
  };
  std::vector<TiedPart> tied_parts_;
  double wait_s_ = 0, compute_s_ = 0, schedule_s_ = 0;
  int64_t sent_bytes_ = 0;
};

}  // namespace memoe
