#include "parallel/expert_parallel.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "kernels/reduce.h"

namespace memoe {

int ExpertLayout::shard_holding(int expert) const {
  int s = 0;
  while (s + 1 < ep && first_expert(s + 1) <= expert) ++s;
  return s;
}

std::string ExpertLayout::problem() const {
  if (ep < 1) return "--ep must be >= 1";
  if (ranks % ep != 0)
    return "--ep " + std::to_string(ep) + " does not divide the " + std::to_string(ranks) +
           " data-parallel ranks (each EP group is --ep consecutive ranks)";
  if (ep > 1 && n_experts < ep)
    return "--ep " + std::to_string(ep) + " is more than the model's " + std::to_string(n_experts) +
           " routed experts";
  return "";
}

namespace {

std::vector<int64_t> times(const std::vector<int64_t>& rows, int64_t d) {
  std::vector<int64_t> out(rows);
  for (int64_t& v : out) v *= d;
  return out;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int64_t total(const std::vector<int64_t>& v) {
  int64_t t = 0;
  for (int64_t x : v) t += x;
  return t;
}

// A parameter name's layer ("model.layers.L. ...", V4's "layers.L. ...").
int layer_of(const std::string& name) { return layer_of_param(name); }

}  // namespace

ExpertParallel::ExpertParallel(Communicator& world, int ep, const ModelConfig& cfg) {
  layout_ = {world.size(), ep, cfg.n_routed_experts};
  const std::string problem = layout_.problem();
  MEMOE_CHECK(problem.empty(), problem);
  world_ = &world;
  shard_ = layout_.shard_of(world.rank());
  const int group = layout_.group_of(world.rank());
  ep_ = world.split(group, shard_);
  same_ = world.split(shard_, group);
  // Allocated up front, so the memory report counts them.
  source_grads_.resize(size_t(cfg.num_hidden_layers));
  for (int l = 0; l < cfg.num_hidden_layers; ++l)
    if (cfg.is_moe_layer(l)) source_grads(l, 0, 0, cfg);
}

ExpertParallel::~ExpertParallel() = default;

void ExpertParallel::exchange(const float* send, const std::vector<int64_t>& send_rows, float* recv,
                              const std::vector<int64_t>& recv_rows, int64_t d) {
  const auto t0 = std::chrono::steady_clock::now();
  ep_->exchange(send, times(send_rows, d), recv, times(recv_rows, d));
  exchange_s_ += seconds_since(t0);
  for (int q = 0; q < ep_->size(); ++q)
    if (q != ep_->rank()) sent_bytes_ += send_rows[size_t(q)] * d * int64_t(sizeof(float));
}

void ExpertParallel::forward(int, const ModelConfig& cfg, const MoEParams& p, const ExpertGroups& groups,
                             const float* xg, MoECache& cache, float* out) {
  const int P = ep_->size(), H = expert_end() - expert_begin(), n = layout_.n_experts;
  const int64_t d = cfg.hidden_size;
  MEMOE_CHECK(p.expert_begin == expert_begin() && p.expert_end == expert_end(), "expert parallel: this rank holds ",
              "experts ", p.expert_begin, "..", p.expert_end - 1, ", its shard is ", expert_begin(), "..",
              expert_end() - 1);
  MEMOE_CHECK(int(groups.offsets.size()) == n + 1, "expert parallel: rows grouped over ", groups.offsets.size() - 1,
              " experts, the model has ", n);
  RemoteExpertCache& rc = cache.remote;
  // Every peer's rows per expert, so each owner knows what comes from whom.
  std::vector<int64_t> mine(static_cast<size_t>(n));
  for (int e = 0; e < n; ++e) mine[size_t(e)] = groups.count(e);
  const std::vector<int64_t> all = ep_->all_gather(mine);
  rc.send_rows.assign(size_t(P), 0);
  rc.recv_rows.assign(size_t(P), 0);
  rc.rows.assign(size_t(P * H), 0);
  for (int q = 0; q < P; ++q)
    for (int e = layout_.first_expert(q); e < layout_.first_expert(q + 1); ++e) rc.send_rows[size_t(q)] += mine[size_t(e)];
  for (int s = 0; s < P; ++s)
    for (int h = 0; h < H; ++h) {
      const int64_t rows = all[size_t(s * n + expert_begin() + h)];
      rc.rows[size_t(s * H + h)] = rows;
      rc.recv_rows[size_t(s)] += rows;
    }
  const int64_t received = total(rc.recv_rows), pairs = groups.offsets.back();
  // An expert's rows lie together in xg, and a shard's experts are
  // consecutive, so each peer's rows are one contiguous run.
  rc.received.resize({received, d});
  exchange(xg, rc.send_rows, rc.received.data(), rc.recv_rows, d);
  Tensor result({received, d});
  rc.experts.resize(size_t(P * H));
  int64_t at = 0;
  for (int s = 0; s < P; ++s)
    for (int h = 0; h < H; ++h) {
      const int64_t rows = rc.rows[size_t(s * H + h)];
      if (rows > 0)
        swiglu_ffn_forward(p.experts[size_t(expert_begin() + h)], rc.received.data() + at * d, rows,
                           rc.experts[size_t(s * H + h)], result.data() + at * d);
      at += rows;
    }
  rc.out.resize({pairs, d});
  exchange(result.data(), rc.recv_rows, rc.out.data(), rc.send_rows, d);
  if (pairs > 0) std::memcpy(out, rc.out.data(), size_t(pairs * d) * sizeof(float));
}

void ExpertParallel::outputs(int, const ModelConfig& cfg, const MoEParams&, const ExpertGroups& groups,
                             const MoECache& cache, float* out) {
  const int64_t values = groups.offsets.back() * cfg.hidden_size;
  MEMOE_CHECK(cache.remote.out.numel() == values, "expert parallel: the backward pass's rows are not the forward's");
  if (values > 0) std::memcpy(out, cache.remote.out.data(), size_t(values) * sizeof(float));
}

SwiGLUParams& ExpertParallel::source_grads(int layer, int source, int held, const ModelConfig& cfg) {
  const int P = ep_->size(), H = expert_end() - expert_begin();
  std::vector<SwiGLUParams>& layer_grads = source_grads_.at(size_t(layer));
  if (layer_grads.empty()) {
    layer_grads.resize(size_t(P * H));
    for (SwiGLUParams& g : layer_grads) g.allocate(cfg.hidden_size, cfg.moe_intermediate_size);
  }
  return layer_grads[size_t(source * H + held)];
}

void ExpertParallel::backward(int layer, const ModelConfig& cfg, const MoEParams& p, const ExpertGroups&,
                              const float*, const MoECache& cache, const float* gy, MoEParams&, float* dxg) {
  const int P = ep_->size(), H = expert_end() - expert_begin();
  const int64_t d = cfg.hidden_size;
  const RemoteExpertCache& rc = cache.remote;
  const int64_t received = total(rc.recv_rows);
  Tensor gy_in({received, d}), dx_in({received, d});
  exchange(gy, rc.send_rows, gy_in.data(), rc.recv_rows, d);
  int64_t at = 0;
  for (int s = 0; s < P; ++s)
    for (int h = 0; h < H; ++h) {
      const int64_t rows = rc.rows[size_t(s * H + h)];
      if (rows > 0)
        swiglu_ffn_backward(p.experts[size_t(expert_begin() + h)], rc.received.data() + at * d,
                            rc.experts[size_t(s * H + h)], gy_in.data() + at * d, rows,
                            source_grads(layer, s, h, cfg), dx_in.data() + at * d);
      at += rows;
    }
  exchange(dx_in.data(), rc.recv_rows, dxg, rc.send_rows, d);
}

std::vector<Tensor*> ExpertParallel::held_sum_tensors(ModelParams& sum) {
  std::vector<Tensor*> out;
  for (LayerParams& l : sum.layers) {
    if (!l.is_moe) continue;
    for (int e = expert_begin(); e < expert_end(); ++e) {
      SwiGLUParams& g = l.moe.experts[size_t(e)];
      for (Tensor* t : {&g.gate_proj, &g.up_proj, &g.down_proj}) out.push_back(t);
    }
  }
  return out;
}

void ExpertParallel::begin_step(ModelParams& sum) {
  micro_ = 0;
  sent_bytes_ = 0;
  exchange_s_ = chain_s_ = 0;
  for (Tensor* t : held_sum_tensors(sum)) t->zero();
}

namespace {
void pack(const std::vector<Tensor*>& tensors, std::vector<float>& flat) {
  flat.clear();
  for (const Tensor* t : tensors) flat.insert(flat.end(), t->data(), t->data() + t->numel());
}
void unpack(const std::vector<float>& flat, const std::vector<Tensor*>& tensors) {
  size_t at = 0;
  for (Tensor* t : tensors) {
    std::memcpy(t->data(), flat.data() + at, size_t(t->numel()) * sizeof(float));
    at += size_t(t->numel());
  }
}
}  // namespace

void ExpertParallel::add(ModelParams& sum) {
  const int D = same_->size(), g = same_->rank(), P = ep_->size(), H = expert_end() - expert_begin();
  const std::vector<Tensor*> held = held_sum_tensors(sum);
  int64_t values = 0;
  for (const Tensor* t : held) values += t->numel();
  const auto t0 = std::chrono::steady_clock::now();
  // The running sum arrives from the previous group (the first group's,
  // after the first micro-batch, from the last group's).
  if (D > 1) {
    if (g == D - 1 && micro_ > 0) {
      pack(held, chain_);
      same_->send(chain_.data(), values, 0);
    }
    if (g > 0 || micro_ > 0) {
      chain_.resize(size_t(values));
      same_->receive(chain_.data(), values, (g + D - 1) % D);
      unpack(chain_, held);
    }
  }
  // This group's sources in rank order, each added whole.
  size_t at = 0;
  for (size_t l = 0; l < sum.layers.size(); ++l) {
    if (!sum.layers[l].is_moe) continue;
    std::vector<SwiGLUParams>& layer_grads = source_grads_[l];
    for (int h = 0; h < H; ++h, at += 3) {
      for (int s = 0; s < P; ++s) {
        SwiGLUParams& src = layer_grads[size_t(s * H + h)];
        Tensor* from[3] = {&src.gate_proj, &src.up_proj, &src.down_proj};
        for (int t = 0; t < 3; ++t) {
          float* dst = held[at + size_t(t)]->data();
          const float* add = from[t]->data();
          for (int64_t i = 0; i < from[t]->numel(); ++i) dst[i] += add[i];
          from[t]->zero();
        }
      }
    }
  }
  if (D > 1 && g < D - 1) {
    pack(held, chain_);
    same_->send(chain_.data(), values, g + 1);
  }
  ++micro_;
  chain_s_ += seconds_since(t0);
}

void ExpertParallel::finish(ModelParams& sum) {
  const int D = same_->size();
  if (D == 1) return;
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<Tensor*> held = held_sum_tensors(sum);
  pack(held, chain_);
  same_->broadcast(chain_.data(), int64_t(chain_.size()), D - 1);
  unpack(chain_, held);
  chain_s_ += seconds_since(t0);
}

double ExpertParallel::global_norm(ModelParams& grads, GradientNormTerms* terms) {
  const int n = layout_.n_experts;
  const size_t layers = grads.layers.size();
  // Every expert's three partials, from the first group's holder (the
  // others hold the same gradients): a sum with one non-zero term is exact.
  std::vector<double> experts(layers * size_t(n) * 3, 0.0);
  if (layout_.group_of(world_->rank()) == 0)
    for (size_t l = 0; l < layers; ++l) {
      if (!grads.layers[l].is_moe) continue;
      for (int e = expert_begin(); e < expert_end(); ++e) {
        SwiGLUParams& g = grads.layers[l].moe.experts[size_t(e)];
        const Tensor* ts[3] = {&g.gate_proj, &g.up_proj, &g.down_proj};
        for (int t = 0; t < 3; ++t) experts[(l * size_t(n) + size_t(e)) * 3 + size_t(t)] = sum_squares(ts[t]->data(), ts[t]->numel());
      }
    }
  world_->sum(experts.data(), int64_t(experts.size()));
  double norm = 0.0;
  int added_layer = -1;
  grads.visit([&](const std::string& name, Tensor& g) {
    if (routed_expert_of(name) < 0) {
      const double x = sum_squares(g.data(), g.numel());
      norm += x;
      if (terms) terms->dense.push_back(x);
      return;
    }
    const int l = layer_of(name);
    if (l == added_layer) return;
    added_layer = l;  // the layer's first held expert: all of its experts here, in order
    for (size_t i = 0; i < size_t(n) * 3; ++i) {
      norm += experts[size_t(l) * size_t(n) * 3 + i];
      if (terms) terms->dense.push_back(experts[size_t(l) * size_t(n) * 3 + i]);
    }
  });
  for (const LayerParams& l : grads.layers) {
    if (!l.has_engram) continue;
    const double x = sum_squares(l.engram.embedding_grad.grad.data(), int64_t(l.engram.embedding_grad.grad.size()));
    norm += x;
    if (terms) terms->rows.push_back(x);
  }
  return std::sqrt(norm);
}

void ExpertParallel::broadcast_experts(ModelParams& params) {
  for (Tensor* t : held_sum_tensors(params)) same_->broadcast(t->data(), t->numel(), 0);
}

void ExpertParallel::idle_layer(const Model& model, int layer) {
  ExpertGroups none;
  none.offsets.assign(size_t(layout_.n_experts) + 1, 0);
  MoECache scratch;
  forward(layer, model.config, model.params.layers.at(size_t(layer)).moe, none, nullptr, scratch, nullptr);
}

int64_t ExpertParallel::buffer_bytes() const {
  int64_t bytes = int64_t(chain_.capacity() * sizeof(float));
  for (const auto& layer : source_grads_)
    for (const SwiGLUParams& g : layer)
      bytes += (g.gate_proj.numel() + g.up_proj.numel() + g.down_proj.numel()) * int64_t(sizeof(float));
  return bytes;
}

}  // namespace memoe
