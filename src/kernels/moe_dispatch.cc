#include "kernels/moe_dispatch.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "core/error.h"
#include "core/rng.h"
#include "kernels/activation.h"
#include "kernels/reduce.h"

namespace memoe {

namespace {

// Parallel loops below this many rows are not worth waking the thread team.
constexpr int64_t kParallelRows = 64;

// Records the first (lowest) bad row seen by any thread; errors cannot be
// thrown out of an OpenMP region, so they are raised after it.
void note_bad_row(std::atomic<int64_t>& first_bad, int64_t row) {
  int64_t cur = first_bad.load();
  while (row < cur && !first_bad.compare_exchange_weak(cur, row)) {
  }
}

constexpr int64_t kNoBadRow = std::numeric_limits<int64_t>::max();

}  // namespace

void check_router_spec(const RouterSpec& spec) {
  MEMOE_CHECK(spec.n_experts > 0, "moe router: n_experts must be positive, got ", spec.n_experts);
  MEMOE_CHECK(spec.top_k > 0 && spec.top_k <= spec.n_experts, "moe router: top_k must be in 1..", spec.n_experts,
              ", got ", spec.top_k);
  MEMOE_CHECK(spec.n_group >= 1 && spec.n_experts % spec.n_group == 0, "moe router: n_group ", spec.n_group,
              " must divide n_experts ", spec.n_experts);
  MEMOE_CHECK(spec.topk_group >= 1 && spec.topk_group <= spec.n_group, "moe router: topk_group must be in 1..",
              spec.n_group, ", got ", spec.topk_group);
  if (spec.n_group > 1) {
    const int group_size = spec.n_experts / spec.n_group;
    MEMOE_CHECK(group_size >= 2, "moe router: groups of ", group_size, " expert(s); group scoring needs 2");
    MEMOE_CHECK(spec.top_k <= spec.topk_group * group_size, "moe router: top_k ", spec.top_k,
                " exceeds the experts of the ", spec.topk_group, " kept groups");
  }
}

void router_scores(const RouterSpec& spec, const float* logits, int64_t n, float* s) {
  const int64_t E = spec.n_experts;
  std::atomic<int64_t> first_bad{kNoBadRow};
#pragma omp parallel for schedule(static) if (n > kParallelRows)
  for (int64_t t = 0; t < n; ++t) {
    const float* z = logits + t * E;
    float* st = s + t * E;
    bool finite = true;
    if (spec.scoring == RouterScoring::Softmax) {
      float zmax = z[0];
      for (int64_t e = 1; e < E; ++e) zmax = std::max(zmax, z[e]);
      double sum = 0.0;
      for (int64_t e = 0; e < E; ++e) {
        st[e] = std::exp(z[e] - zmax);
        sum += st[e];
      }
      const float inv = float(1.0 / sum);
      for (int64_t e = 0; e < E; ++e) {
        st[e] *= inv;
        finite = finite && std::isfinite(st[e]);
      }
    } else if (spec.scoring == RouterScoring::SqrtSoftplus) {
      for (int64_t e = 0; e < E; ++e) {
        // softplus(z) = max(z, 0) + log1p(exp(-|z|)), which never overflows.
        st[e] = std::sqrt(std::max(z[e], 0.0f) + std::log1p(std::exp(-std::fabs(z[e]))));
        finite = finite && std::isfinite(st[e]);
      }
    } else {
      for (int64_t e = 0; e < E; ++e) {
        st[e] = sigmoidf(z[e]);
        finite = finite && !std::isnan(st[e]);
      }
    }
    if (!finite) note_bad_row(first_bad, t);
  }
  if (first_bad.load() != kNoBadRow) fail("moe router: non-finite gate logits at token ", first_bad.load());
}

namespace {

// w_j = s[idx_j], renormalised over the k chosen when asked, times the
// scaling factor.
void routing_weights(const RouterSpec& spec, const float* st, const int32_t* idx, float* w) {
  double sum = 0.0;
  for (int j = 0; j < spec.top_k; ++j) sum += st[idx[j]];
  const double scale =
      spec.norm_topk_prob ? spec.routed_scaling_factor / (sum + 1e-20) : double(spec.routed_scaling_factor);
  for (int j = 0; j < spec.top_k; ++j) w[j] = float(double(st[idx[j]]) * scale);
}

}  // namespace

void route_by_token(const RouterSpec& spec, const float* s, const int32_t* table, const int64_t* ids, int64_t n,
                    int32_t* idx, float* w) {
  const int k = spec.top_k;
  const int64_t E = spec.n_experts;
#pragma omp parallel for schedule(static) if (n > kParallelRows)
  for (int64_t t = 0; t < n; ++t) {
    std::copy(table + ids[t] * k, table + (ids[t] + 1) * k, idx + t * k);
    routing_weights(spec, s + t * E, idx + t * k, w + t * k);
  }
}

std::vector<int32_t> balanced_token_routing(int64_t vocab, int k, int n_experts, uint64_t seed) {
  MEMOE_CHECK(k >= 1 && k <= n_experts, "token routing: top-k ", k, " must be in 1..", n_experts);
  Rng rng(seed);
  auto shuffle = [&](std::vector<int64_t>& v) {
    for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[size_t(rng.below(i))]);
  };
  std::vector<int64_t> order(static_cast<size_t>(vocab)), names(static_cast<size_t>(n_experts));
  std::iota(order.begin(), order.end(), int64_t{0});
  std::iota(names.begin(), names.end(), int64_t{0});
  shuffle(order);
  shuffle(names);
  std::vector<int32_t> table(size_t(vocab) * size_t(k));
  for (int64_t t = 0; t < vocab; ++t)
    for (int j = 0; j < k; ++j)
      table[size_t(t * k + j)] = int32_t(names[size_t((order[size_t(t)] * k + j) % n_experts)]);
  return table;
}

void check_token_routing(const int32_t* table, int64_t vocab, int k, int n_experts) {
  for (int64_t t = 0; t < vocab; ++t) {
    const int32_t* row = table + t * k;
    for (int j = 0; j < k; ++j) {
      MEMOE_CHECK(row[j] >= 0 && row[j] < n_experts, "tid2eid: token ", t, " routes to expert ", row[j],
                  ", outside 0..", n_experts - 1);
      for (int i = 0; i < j; ++i)
        MEMOE_CHECK(row[i] != row[j], "tid2eid: token ", t, " lists expert ", row[j], " twice");
    }
  }
}

void route_top_k(const RouterSpec& spec, const float* s, const float* bias, int64_t n, int32_t* idx, float* w) {
  const int E = spec.n_experts, k = spec.top_k, n_group = spec.n_group;
  const int group_size = E / n_group;
  std::atomic<int64_t> first_bad{kNoBadRow};
#pragma omp parallel if (n > kParallelRows)
  {
    std::vector<float> sel(size_t(E), 0.0f);
    std::vector<int32_t> cand;
    cand.reserve(size_t(E));
    std::vector<float> group_score(static_cast<size_t>(n_group));
    std::vector<int32_t> group_order(static_cast<size_t>(n_group));
    // Higher selection score first; on equal scores the lower index wins.
    auto better = [](const std::vector<float>& score) {
      return [&score](int32_t a, int32_t b) { return score[a] > score[b] || (score[a] == score[b] && a < b); };
    };
#pragma omp for schedule(static)
    for (int64_t t = 0; t < n; ++t) {
      const float* st = s + t * E;
      bool finite = true;
      for (int e = 0; e < E; ++e) {
        sel[e] = st[e] + (bias ? bias[e] : 0.0f);
        finite = finite && std::isfinite(sel[e]);
      }
      if (!finite) {  // NaN breaks the ordering the sort relies on
        note_bad_row(first_bad, t);
        continue;
      }
      cand.clear();
      if (n_group > 1) {
        for (int g = 0; g < n_group; ++g) {
          const float* sg = sel.data() + size_t(g) * group_size;
          float top1 = std::max(sg[0], sg[1]), top2 = std::min(sg[0], sg[1]);
          for (int j = 2; j < group_size; ++j) {
            if (sg[j] > top1) {
              top2 = top1;
              top1 = sg[j];
            } else if (sg[j] > top2) {
              top2 = sg[j];
            }
          }
          group_score[g] = top1 + top2;
        }
        std::iota(group_order.begin(), group_order.end(), 0);
        std::partial_sort(group_order.begin(), group_order.begin() + spec.topk_group, group_order.end(),
                          better(group_score));
        std::sort(group_order.begin(), group_order.begin() + spec.topk_group);
        for (int i = 0; i < spec.topk_group; ++i)
          for (int j = 0; j < group_size; ++j) cand.push_back(group_order[i] * group_size + j);
      } else {
        for (int e = 0; e < E; ++e) cand.push_back(e);
      }
      std::partial_sort(cand.begin(), cand.begin() + k, cand.end(), better(sel));
      for (int j = 0; j < k; ++j) idx[t * k + j] = cand[j];
      routing_weights(spec, st, idx + t * k, w + t * k);
    }
  }
  if (first_bad.load() != kNoBadRow)
    fail("moe router: non-finite score or correction bias at token ", first_bad.load());
}

void group_by_expert(const int32_t* idx, int64_t n, int k, int n_experts, ExpertGroups& groups) {
  const int64_t pairs = n * k;
  groups.offsets.assign(size_t(n_experts) + 1, 0);
  groups.pairs.resize(size_t(pairs));
  groups.position.resize(size_t(pairs));
  for (int64_t p = 0; p < pairs; ++p) {
    MEMOE_CHECK(idx[p] >= 0 && idx[p] < n_experts, "moe dispatch: expert id ", idx[p], " out of range 0..",
                n_experts - 1);
    ++groups.offsets[size_t(idx[p]) + 1];
  }
  for (int e = 0; e < n_experts; ++e) groups.offsets[size_t(e) + 1] += groups.offsets[size_t(e)];
  std::vector<int64_t> cursor(groups.offsets.begin(), groups.offsets.end() - 1);
  for (int64_t p = 0; p < pairs; ++p) {
    const int64_t row = cursor[size_t(idx[p])]++;
    groups.pairs[size_t(row)] = p;
    groups.position[size_t(p)] = row;
  }
}

void gather_rows(const float* src, int64_t d, const int64_t* pairs, int64_t m, int k, float* dst) {
#pragma omp parallel for schedule(static) if (m > kParallelRows)
  for (int64_t r = 0; r < m; ++r)
    std::memcpy(dst + r * d, src + (pairs[r] / k) * d, sizeof(float) * size_t(d));
}

void combine_rows(const float* grouped, const int64_t* position, const float* w, int64_t n, int k, int64_t d,
                  float* y) {
#pragma omp parallel for schedule(static) if (n > kParallelRows)
  for (int64_t t = 0; t < n; ++t) {
    float* yt = y + t * d;
    for (int j = 0; j < k; ++j) {
      const float* g = grouped + position[t * k + j] * d;
      const float wj = w ? w[t * k + j] : 1.0f;
      for (int64_t c = 0; c < d; ++c) yt[c] += wj * g[c];
    }
  }
}

void combine_rows_backward(const float* out, const int64_t* pairs, const float* w, int64_t m, int64_t d, float* gy,
                           float* dw) {
  for (int64_t r = 0; r < m; ++r) {  // called per expert, from inside the experts' parallel loop
    double dot = 0.0;
    for (int64_t c = 0; c < d; ++c) dot += double(gy[r * d + c]) * out[r * d + c];
    dw[pairs[r]] = float(dot);
    const float wr = w[pairs[r]];
    for (int64_t c = 0; c < d; ++c) gy[r * d + c] *= wr;
  }
}

void route_weights_backward(const RouterSpec& spec, const float* s, const int32_t* idx, const float* dw, int64_t n,
                            float* ds) {
  const int E = spec.n_experts, k = spec.top_k;
  const double c = spec.routed_scaling_factor;
#pragma omp parallel for schedule(static) if (n > kParallelRows)
  for (int64_t t = 0; t < n; ++t) {
    const float* st = s + t * E;
    const int32_t* it = idx + t * k;
    const float* dwt = dw + t * k;
    float* dst = ds + t * E;
    if (!spec.norm_topk_prob) {
      for (int j = 0; j < k; ++j) dst[it[j]] += float(c * dwt[j]);
      continue;
    }
    // w_j = c r_j / D, D = sum r + eps: dr_j = c/D * (dw_j - sum_i dw_i r_i / D).
    double denom = 1e-20, dot = 0.0;
    for (int j = 0; j < k; ++j) denom += st[it[j]];
    for (int j = 0; j < k; ++j) dot += double(dwt[j]) * st[it[j]];
    const double mean = dot / denom;
    for (int j = 0; j < k; ++j) dst[it[j]] += float(c / denom * (dwt[j] - mean));
  }
}

void router_scores_backward(const RouterSpec& spec, const float* s, const float* ds, int64_t n, float* dlogits) {
  const int64_t E = spec.n_experts;
#pragma omp parallel for schedule(static) if (n > kParallelRows)
  for (int64_t t = 0; t < n; ++t) {
    const float* st = s + t * E;
    const float* dst = ds + t * E;
    float* dz = dlogits + t * E;
    if (spec.scoring == RouterScoring::Softmax) {
      double dot = 0.0;
      for (int64_t e = 0; e < E; ++e) dot += double(st[e]) * dst[e];
      for (int64_t e = 0; e < E; ++e) dz[e] += st[e] * float(dst[e] - dot);
    } else if (spec.scoring == RouterScoring::SqrtSoftplus) {
      // s = sqrt(softplus(z)): ds/dz = sigmoid(z) / (2 s), and sigmoid(z) =
      // 1 - exp(-softplus(z)) = -expm1(-s^2): from s alone, and -> s/2 as s -> 0.
      for (int64_t e = 0; e < E; ++e)
        if (st[e] > 0.0f) dz[e] += dst[e] * (-std::expm1(-st[e] * st[e])) / (2.0f * st[e]);
    } else {
      for (int64_t e = 0; e < E; ++e) dz[e] += dst[e] * st[e] * (1.0f - st[e]);
    }
  }
}

namespace {

// f_e = E / (k L) * #tokens of sequence b routed to e.
void balance_fractions(const RouterSpec& spec, const int32_t* idx, int64_t b, int64_t seq_len, std::vector<double>& f) {
  const int k = spec.top_k;
  std::fill(f.begin(), f.end(), 0.0);
  const int32_t* ib = idx + b * seq_len * k;
  for (int64_t p = 0; p < seq_len * k; ++p) f[size_t(ib[p])] += 1.0;
  const double norm = double(spec.n_experts) / (double(k) * double(seq_len));
  for (double& v : f) v *= norm;
}

}  // namespace

double seq_balance_loss(const RouterSpec& spec, const float* s, const int32_t* idx, int64_t batch, int64_t seq_len,
                        double alpha) {
  if (batch == 0 || seq_len == 0) return 0.0;
  const int64_t E = spec.n_experts;
  // One chunk per sequence, added in sequence order: independent of the thread count.
  const double total = chunked_sum(batch, 1, batch > 1 && batch * seq_len > kParallelRows, [&](int64_t b, int64_t) {
    std::vector<double> f(static_cast<size_t>(E));
    balance_fractions(spec, idx, b, seq_len, f);
    double seq = 0.0;  // sum_e f_e * sum_t s_te / S_t, divided by L below
    for (int64_t t = b * seq_len; t < (b + 1) * seq_len; ++t) {
      const float* st = s + t * E;
      double sum = 0.0, fs = 0.0;
      for (int64_t e = 0; e < E; ++e) {
        sum += st[e];
        fs += f[size_t(e)] * st[e];
      }
      seq += fs / sum;
    }
    return seq / double(seq_len);
  });
  return alpha * total / double(batch);
}

void seq_balance_loss_backward(const RouterSpec& spec, const float* s, const int32_t* idx, int64_t batch,
                               int64_t seq_len, double alpha, float* ds) {
  if (batch == 0 || seq_len == 0) return;
  const int64_t E = spec.n_experts;
  const double scale = alpha / (double(batch) * double(seq_len));
#pragma omp parallel if (batch > 1 && batch * seq_len > kParallelRows)
  {
    std::vector<double> f(static_cast<size_t>(E));
#pragma omp for schedule(static)
    for (int64_t b = 0; b < batch; ++b) {
      balance_fractions(spec, idx, b, seq_len, f);
      for (int64_t t = b * seq_len; t < (b + 1) * seq_len; ++t) {
        const float* st = s + t * E;
        float* dst = ds + t * E;
        // d(s_e'/S)/ds_e = (delta_ee' - s_e'/S) / S.
        double sum = 0.0, fs = 0.0;
        for (int64_t e = 0; e < E; ++e) {
          sum += st[e];
          fs += f[size_t(e)] * st[e];
        }
        const double mean_f = fs / sum;
        for (int64_t e = 0; e < E; ++e) dst[e] += float(scale * (f[size_t(e)] - mean_f) / sum);
      }
    }
  }
}

void correction_bias_step(const int64_t* load, int64_t E, double gamma, float* bias) {
  if (E == 0) return;
  double mean = 0.0;
  for (int64_t e = 0; e < E; ++e) mean += double(load[e]);
  mean /= double(E);
  for (int64_t e = 0; e < E; ++e) {
    const double gap = mean - double(load[e]);
    bias[e] += float(gamma * double((gap > 0) - (gap < 0)));
  }
}

}  // namespace memoe
