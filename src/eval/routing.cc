#include "eval/routing.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"
#include "core/rng.h"

namespace memoe {

RoutingCounts count_routing(const Model& model, const std::vector<std::string>& domains,
                            const std::vector<std::vector<int64_t>>& domain_ids, int64_t seq_len) {
  const ModelConfig& cfg = model.config;
  MEMOE_CHECK(domains.size() == domain_ids.size() && !domains.empty(), "routing: ", domains.size(), " domains and ",
              domain_ids.size(), " token lists");
  MEMOE_CHECK(seq_len > 0 && seq_len <= cfg.max_position_embeddings, "routing: window of ", seq_len,
              " tokens for a model with a context of ", cfg.max_position_embeddings);
  RoutingCounts c;
  c.domains = domains;
  c.experts = cfg.n_routed_experts;
  for (int l = 0; l < cfg.num_hidden_layers; ++l)
    if (cfg.is_moe_layer(l)) c.layers.push_back(l);
  MEMOE_CHECK(!c.layers.empty(), "routing: the model has no MoE layer");
  c.tokens.assign(domains.size(), 0);
  c.slots.assign(c.layers.size(),
                 std::vector<std::vector<double>>(domains.size(), std::vector<double>(size_t(c.experts), 0.0)));
  ModelState state;
  for (size_t d = 0; d < domains.size(); ++d) {
    const std::vector<int64_t>& ids = domain_ids[d];
    MEMOE_CHECK(!ids.empty(), "routing: domain '", domains[d], "' has no tokens");
    check_token_ids(cfg, ids.data(), int64_t(ids.size()));
    for (size_t start = 0; start < ids.size(); start += size_t(seq_len)) {
      const int64_t n = std::min<int64_t>(seq_len, int64_t(ids.size() - start));
      model_forward(model, ids.data() + start, 1, n, state);
      c.tokens[d] += n;
      for (size_t li = 0; li < c.layers.size(); ++li)
        for (int32_t e : state.layers[size_t(c.layers[li])].moe.expert_ids) c.slots[li][d][size_t(e)] += 1;
    }
  }
  return c;
}

namespace {

// Entropy of the (unnormalised, non-negative) weights over log(count): 0..1.
double normalised_entropy(const std::vector<double>& w) {
  double total = 0;
  for (double v : w) total += v;
  if (total <= 0 || w.size() < 2) return 0;
  double h = 0;
  for (double v : w)
    if (v > 0) h -= (v / total) * std::log(v / total);
  return h / std::log(double(w.size()));
}

double pearson(const std::vector<double>& x, const std::vector<double>& y) {
  const double n = double(x.size());
  double mx = 0, my = 0;
  for (size_t i = 0; i < x.size(); ++i) mx += x[i], my += y[i];
  mx /= n, my /= n;
  double sxy = 0, sxx = 0, syy = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) * (x[i] - mx);
    syy += (y[i] - my) * (y[i] - my);
  }
  // A flat profile (an expert used alike everywhere, or never) correlates with nothing.
  return sxx > 0 && syy > 0 ? sxy / std::sqrt(sxx * syy) : 0.0;
}

std::vector<double> profile(const LayerRouting& r, size_t expert) {
  std::vector<double> p;
  for (const std::vector<double>& row : r.usage) p.push_back(row[expert]);
  return p;
}

}  // namespace

std::vector<LayerRouting> summarise_routing(const RoutingCounts& c) {
  std::vector<LayerRouting> out;
  const size_t D = c.domains.size(), E = size_t(c.experts);
  for (size_t li = 0; li < c.layers.size(); ++li) {
    LayerRouting r;
    r.layer = c.layers[li];
    std::vector<double> load(E, 0.0);
    r.usage.assign(D, std::vector<double>(E, 0.0));
    for (size_t d = 0; d < D; ++d) {
      double slots = 0;
      for (size_t e = 0; e < E; ++e) slots += c.slots[li][d][e], load[e] += c.slots[li][d][e];
      for (size_t e = 0; e < E; ++e) r.usage[d][e] = slots > 0 ? c.slots[li][d][e] / slots : 0.0;
    }
    double mean = 0, max = 0;
    for (double v : load) mean += v / double(E), max = std::max(max, v);
    double var = 0;
    for (double v : load) var += (v - mean) * (v - mean) / double(E);
    r.load_max_over_mean = mean > 0 ? max / mean : 0;
    r.load_cv = mean > 0 ? std::sqrt(var) / mean : 0;
    r.load_entropy = normalised_entropy(load);
    for (size_t e = 0; e < E; ++e) {
      const double s = D > 1 ? 1.0 - normalised_entropy(profile(r, e)) : 0.0;
      r.specialisation.push_back(s);
      r.mean_specialisation += s / double(E);
    }
    out.push_back(std::move(r));
  }
  return out;
}

std::vector<int> best_assignment(const std::vector<std::vector<double>>& score) {
  // Hungarian method on cost = -score, with potentials u (rows) and v
  // (columns); index 0 is the virtual start column.
  const size_t n = score.size();
  for (const auto& row : score) MEMOE_CHECK(row.size() == n, "assignment: the score matrix is not square");
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<double> u(n + 1, 0), v(n + 1, 0);
  std::vector<size_t> row_of(n + 1, 0), way(n + 1, 0);
  for (size_t i = 1; i <= n; ++i) {
    row_of[0] = i;
    size_t j0 = 0;
    std::vector<double> min_to(n + 1, inf);
    std::vector<bool> used(n + 1, false);
    do {
      used[j0] = true;
      const size_t i0 = row_of[j0];
      double delta = inf;
      size_t j1 = 0;
      for (size_t j = 1; j <= n; ++j) {
        if (used[j]) continue;
        const double cur = -score[i0 - 1][j - 1] - u[i0] - v[j];
        if (cur < min_to[j]) min_to[j] = cur, way[j] = j0;
        if (min_to[j] < delta) delta = min_to[j], j1 = j;
      }
      for (size_t j = 0; j <= n; ++j) {
        if (used[j]) u[row_of[j]] += delta, v[j] -= delta;
        else min_to[j] -= delta;
      }
      j0 = j1;
    } while (row_of[j0] != 0);
    do {
      const size_t j1 = way[j0];
      row_of[j0] = row_of[j1];
      j0 = j1;
    } while (j0 != 0);
  }
  std::vector<int> match(n, 0);
  for (size_t j = 1; j <= n; ++j) match[row_of[j] - 1] = int(j - 1);
  return match;
}

std::vector<LayerConsistency> routing_consistency(const std::vector<LayerRouting>& a,
                                                  const std::vector<LayerRouting>& b) {
  MEMOE_CHECK(a.size() == b.size(), "routing consistency: ", a.size(), " and ", b.size(), " MoE layers");
  std::vector<LayerConsistency> out;
  for (size_t li = 0; li < a.size(); ++li) {
    const LayerRouting &x = a[li], &y = b[li];
    MEMOE_CHECK(x.layer == y.layer && x.usage.size() == y.usage.size() && !x.usage.empty() &&
                    x.usage[0].size() == y.usage[0].size(),
                "routing consistency: layer ", x.layer, " and ", y.layer, " differ in domains or experts");
    const size_t E = x.usage[0].size();
    auto correlations = [&](const LayerRouting& other) {
      std::vector<std::vector<double>> corr(E, std::vector<double>(E));
      for (size_t i = 0; i < E; ++i)
        for (size_t j = 0; j < E; ++j) corr[i][j] = pearson(profile(x, i), profile(other, j));
      return corr;
    };
    auto matched_mean = [&](const std::vector<std::vector<double>>& corr, const std::vector<int>& match) {
      double sum = 0;
      for (size_t i = 0; i < E; ++i) sum += corr[i][size_t(match[i])];
      return sum / double(E);
    };
    const std::vector<std::vector<double>> corr = correlations(y);
    LayerConsistency c;
    c.layer = x.layer;
    c.match = best_assignment(corr);
    c.matched_correlation = matched_mean(corr, c.match);
    for (size_t i = 0; i < E; ++i) c.identity_correlation += corr[i][i] / double(E);
    constexpr int kShuffles = 8;
    Rng rng(0x6e756c6cull + uint64_t(x.layer));  // "null"
    for (int t = 0; t < kShuffles; ++t) {
      LayerRouting shuffled = y;
      for (size_t d = shuffled.usage.size(); d > 1; --d) std::swap(shuffled.usage[d - 1], shuffled.usage[rng.below(d)]);
      const std::vector<std::vector<double>> null_corr = correlations(shuffled);
      c.null_correlation += matched_mean(null_corr, best_assignment(null_corr)) / kShuffles;
    }
    out.push_back(std::move(c));
  }
  return out;
}

}  // namespace memoe
