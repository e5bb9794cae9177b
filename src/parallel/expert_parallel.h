// Expert parallelism: the routed experts of every MoE layer sharded over E
// ranks (an EP group) of the data-parallel world; attention, dense layers,
// the router and the shared experts stay replicated. Ranks g·E .. g·E+E-1
// form EP group g; rank g·E+s holds shard s, experts
// [n·s/E, n·(s+1)/E). The ranks holding the same shard (one per group)
// reduce its gradients.
//
// Tokens are routed where they are; each expert's rows go to the rank that
// holds it (MPI_Alltoallv over the EP group) and its outputs come back in
// the same order; the backward pass does the reverse. The owner runs an
// expert over each source rank's rows separately, so every product has the
// shape it has in data-parallel training, and each source's gradient of
// the expert is kept apart; the step's sum adds them over the micro-batches
// in order and within each over the source ranks in rank order, exactly as
// parallel/data_parallel.h sums every other gradient. The layouts therefore
// agree bit for bit with data parallel and with one process. The price:
// with D = ranks / E > 1 groups the running sum of a shard's gradient
// passes from group to group (D hops a micro-batch, each the size of the
// shard's gradient), a chain where a tree would not keep the order.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "parallel/communicator.h"
#include "model/model.h"

namespace memoe {

// Which rank holds which experts; arithmetic only.
struct ExpertLayout {
  int ranks = 1;     // the data-parallel world
  int ep = 1;        // ranks in an EP group
  int n_experts = 0; // routed experts per MoE layer

  int group_of(int rank) const { return rank / ep; }
  int shard_of(int rank) const { return rank % ep; }
  int first_expert(int shard) const { return int(int64_t(n_experts) * shard / ep); }
  int shard_holding(int expert) const;  // the shard an expert is in
  // One line naming what does not fit (E must divide the ranks, and be at
  // most the experts); empty when it does.
  std::string problem() const;
};

class ExpertParallel final : public ExpertDispatch {
 public:
  // A collective over world (it splits the EP and same-shard groups).
  ExpertParallel(Communicator& world, int ep, const ModelConfig& cfg);
  ~ExpertParallel() override;

  const ExpertLayout& layout() const { return layout_; }
  int expert_begin() const { return layout_.first_expert(shard_); }
  int expert_end() const { return layout_.first_expert(shard_ + 1); }

  void forward(int layer, const ModelConfig& cfg, const MoEParams& p, const ExpertGroups& groups, const float* xg,
               MoECache& cache, float* out) override;
  void outputs(int layer, const ModelConfig& cfg, const MoEParams& p, const ExpertGroups& groups,
               const MoECache& cache, float* out) override;
  void backward(int layer, const ModelConfig& cfg, const MoEParams& p, const ExpertGroups& groups, const float* xg,
                const MoECache& cache, const float* gy, MoEParams& grads, float* dxg) override;

  // The step's expert gradients, in `sum` (the trainer's gradient struct):
  // begin_step zeroes them; add() (a collective, once per micro-batch,
  // after its backward pass) adds the micro-batch's per-source gradients in
  // rank order; finish() gives every holder of a shard the whole sum.
  void begin_step(ModelParams& sum);
  void add(ModelParams& sum);
  void finish(ModelParams& sum);
  // The global gradient norm with every expert counted once, in the order
  // train/gradients.h's gradient_global_norm adds (the same bits).
  double global_norm(ModelParams& grads, GradientNormTerms* terms = nullptr);
  // The held experts become the first group's (as broadcast_parameters does
  // for the replicated tensors).
  void broadcast_experts(ModelParams& params);
  // One MoE layer's exchanges with no rows of this rank's own (its experts
  // still run the rows its peers send): a rank with fewer evaluation
  // batches than its peers takes part in their remaining ones.
  void idle_layer(const Model& model, int layer);
  // Bytes this rank holds for the per-source expert gradients.
  int64_t buffer_bytes() const;
  // Since begin_step: bytes this rank sent to other ranks in the token
  // exchanges (rows out, outputs back, forward and backward), and seconds
  // spent in them and in the gradient chain (waiting for peers included).
  int64_t sent_bytes() const { return sent_bytes_; }
  double exchange_seconds() const { return exchange_s_; }
  double chain_seconds() const { return chain_s_; }

 private:
  SwiGLUParams& source_grads(int layer, int source, int held, const ModelConfig& cfg);
  // ep_->exchange, counted and timed.
  void exchange(const float* send, const std::vector<int64_t>& send_rows, float* recv,
                const std::vector<int64_t>& recv_rows, int64_t d);
  std::vector<Tensor*> held_sum_tensors(ModelParams& sum);

  ExpertLayout layout_;
  Communicator* world_ = nullptr;
  int shard_ = 0;
  std::unique_ptr<Communicator> ep_;     // my EP group: rank s holds shard s
  std::unique_ptr<Communicator> same_;   // the ranks holding my shard, one per group, in group order
  // [layer][source * held + h]: each source's gradient of each held expert
  // in the current micro-batch.
  std::vector<std::vector<SwiGLUParams>> source_grads_;
  int64_t micro_ = 0;  // micro-batches added this step
  std::vector<float> chain_;  // the running sum in transit between groups
  int64_t sent_bytes_ = 0;
  double exchange_s_ = 0, chain_s_ = 0;
};

}  // namespace memoe
