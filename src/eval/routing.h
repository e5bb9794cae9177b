// Routing analysis (memoe analyze routing): which routed experts each MoE
// layer chooses for text of each domain, how balanced the load is, how
// specialised each expert is, and whether the same specialisation appears
// in another model (another seed) or another checkpoint of one run.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/model.h"

namespace memoe {

// Router choices of one model: slots[layer][domain][expert] counts the
// top-k slots of the domain's tokens given to the expert at that MoE layer.
struct RoutingCounts {
  std::vector<std::string> domains;
  std::vector<int> layers;  // the model's MoE layers, in order
  int64_t experts = 0;
  std::vector<int64_t> tokens;  // per domain
  std::vector<std::vector<std::vector<double>>> slots;
};

// Runs the model over each domain's ids in windows of `seq_len` tokens (the
// last window may be shorter) and counts the router's choices.
RoutingCounts count_routing(const Model& model, const std::vector<std::string>& domains,
                            const std::vector<std::vector<int64_t>>& domain_ids, int64_t seq_len);

// One MoE layer's summary. Usage f[d][e] is the share of domain d's slots
// given to expert e (each row sums to 1).
struct LayerRouting {
  int layer = 0;
  double load_max_over_mean = 0;  // over all domains' slots: 1 is perfectly balanced
  double load_cv = 0;             // coefficient of variation of the experts' loads
  double load_entropy = 0;        // entropy of the load distribution over log(E): 1 is balanced
  std::vector<std::vector<double>> usage;  // [domain][expert]
  // Per expert: 1 - H(p_e)/log(D) with p_e(d) = f[d][e] / sum_d f[d][e],
  // its use spread over domains with their sizes factored out (0: used
  // alike by every domain, 1: by one domain only).
  std::vector<double> specialisation;
  double mean_specialisation = 0;
};

std::vector<LayerRouting> summarise_routing(const RoutingCounts& counts);

// The assignment of columns to rows maximising the summed score (the
// Hungarian method): result[row] = column. score is square.
std::vector<int> best_assignment(const std::vector<std::vector<double>>& score);

// How alike two models' experts are at one layer: each expert's domain
// profile (its column of usage) correlated (Pearson) with the other's.
struct LayerConsistency {
  int layer = 0;
  std::vector<int> match;       // expert of `b` matched to each expert of `a` (by best_assignment)
  double matched_correlation = 0;   // mean correlation of matched pairs
  double identity_correlation = 0;  // mean correlation of expert e with expert e (checkpoints of one run)
  // The matched correlation again with b's domains shuffled (mean of 8
  // seeded shuffles): what matching finds in profiles with no shared
  // domain structure; the real value means something only well above it.
  double null_correlation = 0;
};

// Both must have the same domains, layers and expert count (one line if not).
std::vector<LayerConsistency> routing_consistency(const std::vector<LayerRouting>& a,
                                                  const std::vector<LayerRouting>& b);

}  // namespace memoe
