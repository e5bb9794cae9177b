// DeepSeekMoE routing and token grouping (spec §4): the per-token loops of
// the router and the counting sort that lets each expert run one matrix
// product over all of its tokens. Knows nothing of ModelConfig (kernels sit
// below io); the layer fills a RouterSpec from it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/few_rows.h"

namespace memoe {

// How router logits z become scores s: elementwise sigmoid (V3), softmax
// over the experts (V2), or V4's sqrt(softplus(z)).
enum class RouterScoring { Sigmoid, Softmax, SqrtSoftplus };

struct RouterSpec {
  int n_experts = 0;       // E
  int top_k = 0;           // k experts per token
  int n_group = 1;         // expert groups; 1 = no group limit
  int topk_group = 1;      // groups kept per token
  RouterScoring scoring = RouterScoring::Sigmoid;
  bool norm_topk_prob = true;
  float routed_scaling_factor = 1.0f;
};

// Checks the spec's numbers (k <= E, groups divide E, enough experts in the
// kept groups); throws memoe::Error naming the problem.
void check_router_spec(const RouterSpec& spec);

// s[n, E] = sigmoid(logits), softmax(logits) row by row, or
// sqrt(softplus(logits)). Throws if a score is not finite (a NaN would make
// the top-k choice meaningless).
void router_scores(const RouterSpec& spec, const float* logits, int64_t n, float* s);

// For each of n tokens: chooses k experts by s + bias (group-limited when
// n_group > 1; ties go to the lower group / expert index) and writes their ids
// in descending order of s + bias to idx[n, k], and their weights (taken from
// s, renormalised if asked, times the scaling factor) to w[n, k].
void route_top_k(const RouterSpec& spec, const float* s, const float* bias, int64_t n, int32_t* idx, float* w);

// V4's hash-routed layers: token t goes to the k experts of row ids[t] of a
// fixed table [V, k] (tid2eid), whatever its scores; the weights are those
// experts' scores, renormalised and scaled as in route_top_k. ids must be
// in 0..V-1 and the table checked (check_token_routing).
void route_by_token(const RouterSpec& spec, const float* s, const int32_t* table, const int64_t* ids, int64_t n,
                    int32_t* idx, float* w);

// A fixed token-id -> experts table [vocab, k] in which every expert is
// used equally often (to within one row) and no row repeats an expert:
// row t holds experts (r_t·k + j) mod E, j < k, for a shuffled order r of
// the tokens, through a shuffled naming of the experts. Deterministic in
// the seed.
std::vector<int32_t> balanced_token_routing(int64_t vocab, int k, int n_experts, uint64_t seed);

// Refuses, in one line naming the row, a table with an expert outside
// 0..E-1 or a row that repeats an expert (DeepSeek's code would count such
// an expert once, with one of its slots' weights, which one unspecified).
void check_token_routing(const int32_t* table, int64_t vocab, int k, int n_experts);

// The n*k (token, slot) pairs, pair p = token * k + slot, sorted by expert.
struct ExpertGroups {
  std::vector<int64_t> offsets;   // [E + 1]: expert e owns grouped rows offsets[e] .. offsets[e+1]
  std::vector<int64_t> pairs;     // [n * k]: the pair at each grouped row, tokens ascending within an expert
  std::vector<int64_t> position;  // [n * k]: the grouped row of each pair (inverse of pairs)
  int64_t count(int e) const { return offsets[size_t(e) + 1] - offsets[size_t(e)]; }
};

// Counting sort of the pairs of idx[n, k] by expert (stable: deterministic).
void group_by_expert(const int32_t* idx, int64_t n, int k, int n_experts, ExpertGroups& groups);

// dst[r] = src[pairs[r] / k] for the m grouped rows r, rows of width d.
void gather_rows(const float* src, int64_t d, const int64_t* pairs, int64_t m, int k, float* dst);

// y[t] += sum over slots j of w[t, j] * grouped[position[t * k + j]] (w null:
// weight 1). Slots are summed in order, so the result is deterministic.
void combine_rows(const float* grouped, const int64_t* position, const float* w, int64_t n, int k, int64_t d,
                  float* y);

// Runs fn(e, first_row, rows) for every expert e that received tokens (its
// grouped rows first_row .. first_row + rows). Experts touch disjoint rows
// and gradients, so they run side by side, one per OpenMP thread: inside a
// parallel region the OpenMP build of OpenBLAS runs each product
// single-threaded, which for expert-sized products beats splitting every
// product over the threads (fewer, larger pieces of work per barrier). On one
// thread the experts run in turn; results are the same either way.
// Decoding (a few rows) wakes the team only when the busy experts' weights
// (expert_weights each) are worth it, as in few_rows.h: moe-medium bf16
// decode, 4 busy experts of 1.2 M weights, 107 -> 135 tokens/s on 2 threads;
// small, 2 of 98 K, 1,490 -> 1,100 had it woken the team too.
template <typename Fn>
void for_each_busy_expert(const ExpertGroups& groups, int64_t expert_weights, Fn&& fn) {
  const int n_experts = int(groups.offsets.size()) - 1;
  int busy = 0;
  for (int e = 0; e < n_experts; ++e) busy += groups.count(e) > 0;
  const bool threaded =
      busy > 1 && (groups.offsets.back() >= 64 || busy * expert_weights > kFewRowsThreadedWeights);
#pragma omp parallel for schedule(dynamic, 1) if (threaded)
  for (int e = 0; e < n_experts; ++e) {
    const int64_t rows = groups.count(e);
    if (rows > 0) fn(e, groups.offsets[size_t(e)], rows);
  }
}

// Backward of combine_rows over m grouped rows (one expert's, say): given
// gy[r] = the output gradient of row r's token and out[r] = the expert's
// output for that row, writes dw[pairs[r]] = <gy[r], out[r]> and scales gy[r]
// in place by w[pairs[r]], making it the gradient of the expert's output.
void combine_rows_backward(const float* out, const int64_t* pairs, const float* w, int64_t m, int64_t d, float* gy,
                           float* dw);

// Backward of the weights w[n, k] of route_top_k: adds d loss / d s into
// ds[n, E] given dw[n, k]. Only the chosen entries of s receive gradient.
void route_weights_backward(const RouterSpec& spec, const float* s, const int32_t* idx, const float* dw, int64_t n,
                            float* ds);

// Backward of router_scores: adds d loss / d logits into dlogits[n, E].
void router_scores_backward(const RouterSpec& spec, const float* s, const float* ds, int64_t n, float* dlogits);

// Sequence-wise balance loss over `batch` sequences of seq_len tokens:
// alpha * mean_b sum_e f_e P_e, f_e = E / (k L) * #tokens of sequence b routed
// to e, P_e = mean_t s_te / sum_e' s_te'.
double seq_balance_loss(const RouterSpec& spec, const float* s, const int32_t* idx, int64_t batch, int64_t seq_len,
                        double alpha);
// Adds its gradient (upstream gradient 1) w.r.t. s into ds[n, E]; f is a constant.
void seq_balance_loss_backward(const RouterSpec& spec, const float* s, const int32_t* idx, int64_t batch,
                               int64_t seq_len, double alpha, float* ds);

// Auxiliary-loss-free balancing (spec §4): bias[e] += gamma * sign(mean
// load - load[e]) for the E experts, so overloaded experts are chosen less.
void correction_bias_step(const int64_t* load, int64_t E, double gamma, float* bias);

}  // namespace memoe
