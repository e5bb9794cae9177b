#include "parallel/pipeline.h"

#include <algorithm>
#include <chrono>
#include <limits>
#include <sstream>

#include "core/error.h"
#include "model/param_count.h"

namespace memoe {

namespace {

// Message tags: the kinds that can travel between the same two ranks.
enum Tag : int { kActivation = 11, kGradient = 12, kTiedGradient = 13, kTiedWeight = 14 };

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

StageCuts balance_stages(const std::vector<double>& layer_cost, double head_cost, int stages) {
  const int L = int(layer_cost.size());
  MEMOE_CHECK(stages >= 1 && stages <= L, "--pp ", stages, ": the model's ", L,
              " layers cannot make that many stages (each needs a layer)");
  std::vector<double> prefix(size_t(L) + 1, 0.0);
  for (int i = 0; i < L; ++i) prefix[size_t(i) + 1] = prefix[size_t(i)] + layer_cost[size_t(i)];
  auto cost = [&](int a, int b) { return prefix[size_t(b)] - prefix[size_t(a)] + (b == L ? head_cost : 0.0); };
  const double inf = std::numeric_limits<double>::infinity();
  // best[s][j]: the least possible most expensive stage when s stages hold
  // the first j layers; from[s][j]: where the last of them starts.
  std::vector<std::vector<double>> best(size_t(stages) + 1, std::vector<double>(size_t(L) + 1, inf));
  std::vector<std::vector<int>> from(size_t(stages) + 1, std::vector<int>(size_t(L) + 1, 0));
  for (int j = 1; j <= L; ++j) best[1][size_t(j)] = cost(0, j);
  for (int s = 2; s <= stages; ++s)
    for (int j = s; j <= L; ++j)
      for (int a = s - 1; a < j; ++a) {
        const double c = std::max(best[size_t(s) - 1][size_t(a)], cost(a, j));
        if (c < best[size_t(s)][size_t(j)]) best[size_t(s)][size_t(j)] = c, from[size_t(s)][size_t(j)] = a;
      }
  StageCuts cuts(size_t(stages) + 1, 0);
  cuts[size_t(stages)] = L;
  for (int s = stages; s >= 2; --s) cuts[size_t(s) - 1] = from[size_t(s)][size_t(cuts[size_t(s)])];
  return cuts;
}

StageCuts parse_stage_layers(const std::string& counts, int layers, int stages) {
  StageCuts cuts = {0};
  std::stringstream in(counts);
  std::string item;
  while (std::getline(in, item, ',')) {
    size_t used = 0;
    int n = 0;
    try {
      n = std::stoi(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    MEMOE_CHECK(used == item.size() && n >= 1, "--pp-layers '", counts, "': '", item,
                "' is not a positive layer count");
    cuts.push_back(cuts.back() + n);
  }
  MEMOE_CHECK(int(cuts.size()) - 1 == stages, "--pp-layers '", counts, "' gives ", cuts.size() - 1,
              " stages, --pp is ", stages);
  MEMOE_CHECK(cuts.back() == layers, "--pp-layers '", counts, "' adds up to ", cuts.back(), " layers, the model has ",
              layers);
  return cuts;
}

StageCuts stage_cuts(const ModelConfig& cfg, int64_t seq_len, int stages, const std::string& pp_layers) {
  if (!pp_layers.empty()) return parse_stage_layers(pp_layers, cfg.num_hidden_layers, stages);
  const ParamCount pc = count_params(cfg, seq_len);
  return balance_stages(pc.layer_forward_flops, pc.head_forward_flops, stages);
}

std::string stage_cuts_string(const StageCuts& cuts) {
  std::string out;
  for (size_t s = 0; s + 1 < cuts.size(); ++s)
    out += (s ? " | " : "") + std::to_string(cuts[s]) + ".." + std::to_string(cuts[s + 1] - 1);
  return out;
}

LayerSeconds measure_layer_seconds(const Model& model, int64_t batch, int64_t seq_len, int repeats) {
  const int L = model.config.num_hidden_layers;
  const int64_t N = batch * seq_len, V = model.config.vocab_size;
  std::vector<int64_t> ids(static_cast<size_t>(N), 0);
  for (int64_t i = 0; i < N; ++i) ids[size_t(i)] = (i * 7919 + 13) % V;  // spread over the vocabulary
  const std::vector<int64_t> targets = next_token_targets(ids.data(), batch, seq_len);
  ModelParams grads = model.make_gradients();
  ModelState st;
  LayerSeconds best;
  best.layers.assign(size_t(L), std::numeric_limits<double>::infinity());
  best.head = std::numeric_limits<double>::infinity();
  for (int r = 0; r < repeats; ++r) {
    std::vector<double> layer(size_t(L), 0.0);
    model_begin(model, ids.data(), batch, seq_len, st);
    embed_forward(model, st);
    for (int l = 0; l < L; ++l) {
      const auto t0 = std::chrono::steady_clock::now();
      layers_forward(model, l, l + 1, st);
      layer[size_t(l)] += seconds_since(t0);
    }
    Tensor dh;
    auto t0 = std::chrono::steady_clock::now();
    head_forward(model, st);
    head_loss_and_grad(model, targets.data(), st, &grads, dh);
    best.head = std::min(best.head, seconds_since(t0));
    for (int l = L - 1; l >= 0; --l) {
      t0 = std::chrono::steady_clock::now();
      layers_backward(model, l, l + 1, st, grads, dh);
      layer[size_t(l)] += seconds_since(t0);
    }
    for (int l = 0; l < L; ++l) best.layers[size_t(l)] = std::min(best.layers[size_t(l)], layer[size_t(l)]);
  }
  return best;
}

std::vector<PipeOp> one_f_one_b(int stages, int stage, int micro_batches) {
  const int warmup = std::min(stages - stage - 1, micro_batches);
  std::vector<PipeOp> ops;
  for (int i = 0; i < warmup; ++i) ops.push_back({true, i});
  for (int k = 0; k + warmup < micro_batches; ++k) {
    ops.push_back({true, warmup + k});
    ops.push_back({false, k});
  }
  for (int i = micro_batches - warmup; i < micro_batches; ++i) ops.push_back({false, i});
  return ops;
}

double ideal_bubble(int stages, int micro_batches) {
  return double(stages - 1) / double(micro_batches + stages - 1);
}

struct Pipeline::Slot {
  ModelState state;
  Tensor dh;  // the gradient entering the stage from above, then leaving it below
  std::vector<std::unique_ptr<Communicator::Pending>> sends;  // of this slot's tensors, still in flight
  void wait_sends() {
    for (auto& p : sends) p->wait();
    sends.clear();
  }
};

Pipeline::Pipeline(Communicator& pipe, const Model& model, StageCuts cuts)
    : pipe_(pipe), model_(model), cuts_(std::move(cuts)), stage_(pipe.rank()) {
  MEMOE_CHECK(int(cuts_.size()) == pipe.size() + 1 && cuts_.front() == 0 &&
                  cuts_.back() == model.config.num_hidden_layers,
              "pipeline: ", cuts_.size() - 1, " stages over ", pipe.size(), " ranks");
  const ModelParams& p = model.params;
  MEMOE_CHECK(pipe.size() == 1 || (p.first_layer == first_layer() && p.last_layer == last_layer()),
              "pipeline: stage ", stage_, " holds layers ", p.first_layer, "..", p.last_layer - 1, ", not ",
              first_layer(), "..", last_layer() - 1);
}

Pipeline::~Pipeline() = default;

bool Pipeline::tied_across() const { return model_.config.tie_word_embeddings && stages() > 1; }

void Pipeline::receive(float* x, int64_t n, int from, int tag) {
  const auto t0 = std::chrono::steady_clock::now();
  pipe_.start_receive(x, n, from, tag)->wait();
  wait_s_ += seconds_since(t0);
}

void Pipeline::send(Slot& slot, const float* x, int64_t n, int to, int tag) {
  slot.sends.push_back(pipe_.start_send(x, n, to, tag));
  sent_bytes_ += n * int64_t(sizeof(float));
}

void Pipeline::forward(const PipeMicro& micro, Slot& slot) {
  ModelState& st = slot.state;
  model_begin(model_, micro.ids, micro.batch, micro.seq_len, st);
  const int64_t N = micro.batch * micro.seq_len, d = model_.config.hidden_size;
  if (is_first()) {
    embed_forward(model_, st);
  } else {
    Tensor& in = layer_input(model_, st, first_layer());
    in.ensure({N, d});
    receive(in.data(), N * d, stage_ - 1, kActivation);
  }
  const auto t0 = std::chrono::steady_clock::now();
  layers_forward(model_, first_layer(), last_layer(), st);
  if (is_last()) head_forward(model_, st);
  compute_s_ += seconds_since(t0);
  if (!is_last()) send(slot, layer_input(model_, st, last_layer()).data(), N * d, stage_ + 1, kActivation);
}

std::vector<double> Pipeline::train_step(const std::vector<PipeMicro>& micro, ModelParams& micro_grads,
                                         const PipeHooks& hooks) {
  const int m = int(micro.size());
  MEMOE_CHECK(m >= 1, "pipeline: a step without micro-batches");
  const auto start = std::chrono::steady_clock::now();
  const int pool = std::min(stages() - stage_, m);
  while (int(states_.size()) < pool) states_.push_back(std::make_unique<Slot>());
  if (tied_across() && is_last()) tied_parts_.resize(size_t(stages()));
  std::vector<double> losses(size_t(m), 0.0);
  const int64_t d = model_.config.hidden_size, V = model_.config.vocab_size;
  for (const PipeOp& op : one_f_one_b(stages(), stage_, m)) {
    const PipeMicro& mb = micro[size_t(op.micro)];
    Slot& slot = *states_[size_t(op.micro % pool)];
    ModelState& st = slot.state;
    const int64_t N = mb.batch * mb.seq_len;
    if (op.forward) {
      slot.wait_sends();  // the slot's previous micro-batch has left
      if (hooks.before_forward) hooks.before_forward(op.micro);
      forward(mb, slot);
      if (!is_last()) losses[size_t(op.micro)] = st.aux_loss;
      if (hooks.after_forward) hooks.after_forward(op.micro, st);
      continue;
    }
    if (hooks.before_backward) hooks.before_backward(op.micro);
    Tensor& dh = slot.dh;
    if (is_last()) {
      const auto t0 = std::chrono::steady_clock::now();
      dh.ensure({N, d});
      dh.zero();  // the head's backward adds into it
      losses[size_t(op.micro)] = head_loss_and_grad(model_, mb.targets, st, &micro_grads, dh, hooks.on_ready) + st.aux_loss;
      compute_s_ += seconds_since(t0);
    } else {
      dh.ensure({N, d});
      receive(dh.data(), N * d, stage_ + 1, kGradient);
    }
    const auto t0 = std::chrono::steady_clock::now();
    layers_backward(model_, first_layer(), last_layer(), st, micro_grads, dh, hooks.on_ready);
    compute_s_ += seconds_since(t0);
    if (is_first()) {
      // The head's part lands in the zeroed embedding gradient before the
      // embedding adds its own: one process's order, so its bits.
      if (tied_across()) receive(micro_grads.embed_tokens.data(), V * d, stages() - 1, kTiedGradient);
      const auto t1 = std::chrono::steady_clock::now();
      embed_backward(model_, st, micro_grads, dh, hooks.on_ready);
      compute_s_ += seconds_since(t1);
    } else {
      send(slot, dh.data(), N * d, stage_ - 1, kGradient);
    }
    if (tied_across() && is_last()) {
      // Sent from a copy: the first stage takes it only at its own backward
      // pass of this micro-batch, several passes later.
      TiedPart& part = tied_parts_[size_t(op.micro % int(tied_parts_.size()))];
      if (part.pending) part.pending->wait();
      part.values.assign(micro_grads.embed_tokens.data(), micro_grads.embed_tokens.data() + V * d);
      part.pending = pipe_.start_send(part.values.data(), V * d, 0, kTiedGradient);
      sent_bytes_ += V * d * int64_t(sizeof(float));
    }
    if (hooks.after_backward) hooks.after_backward(op.micro);
  }
  // Every buffer a send reads stays untouched until the next step's use of it.
  const auto t0 = std::chrono::steady_clock::now();
  for (auto& slot : states_) slot->wait_sends();
  for (TiedPart& part : tied_parts_)
    if (part.pending) part.pending->wait();
  wait_s_ += seconds_since(t0);
  schedule_s_ += seconds_since(start);
  return losses;
}

double Pipeline::forward_loss(const PipeMicro& micro) {
  if (states_.empty()) states_.push_back(std::make_unique<Slot>());
  Slot& slot = *states_[0];
  slot.wait_sends();
  forward(micro, slot);
  if (!is_last()) return 0.0;
  Tensor none;
  return head_loss_and_grad(model_, micro.targets, slot.state, nullptr, none);
}

void Pipeline::sync_tied_embedding(ModelParams& params) {
  if (!tied_across()) return;
  Tensor& e = params.embed_tokens;
  if (is_first()) {
    pipe_.start_send(e.data(), e.numel(), stages() - 1, kTiedWeight)->wait();
    sent_bytes_ += e.numel() * int64_t(sizeof(float));
  } else if (is_last()) {
    receive(e.data(), e.numel(), 0, kTiedWeight);
  }
}

}  // namespace memoe
