#include "parallel/plan.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "model/param_count.h"

namespace memoe {

namespace {

constexpr double kBf16 = 2, kFp32 = 4;

// Parameters of one layer, by how they are split (docs/distributed.md).
struct LayerParams {
  double replicated = 0;  // attention, norms, dense FFN, shared experts, router, Engram projections
  double routed = 0;      // routed experts (split over ep)
  double table = 0;       // Engram tables
};

struct ModelShape {
  std::vector<LayerParams> layers;
  double embedding = 0;  // embed_tokens; the LM head as much again unless tied
  double head = 0;
  double train_flops_per_token = 0;
};

ModelShape shape_of(const ModelConfig& cfg, int64_t seq_len) {
  const ParamCount pc = count_params(cfg, seq_len);
  const double d = double(cfg.hidden_size), V = double(cfg.vocab_size);
  const int L = cfg.num_hidden_layers;
  int moe_layers = 0, engram_layers = 0;
  for (int l = 0; l < L; ++l) {
    moe_layers += cfg.is_moe_layer(l);
    engram_layers += cfg.engram && cfg.engram->has_layer(l);
  }
  const double expert = 3 * d * double(cfg.moe_intermediate_size);
  const double moe_replicated = double(cfg.n_shared_experts) * expert + double(cfg.n_routed_experts) * (d + 1);
  const double dense_ffn = 3 * d * double(cfg.intermediate_size);
  double engram_replicated = 0;
  if (cfg.engram) {
    const double E = double(cfg.engram->embed_dim());
    engram_replicated = 2 * (d * E + d) + 3 * d + d * cfg.engram->kernel_size;
  }
  ModelShape m;
  m.embedding = V * d;
  m.head = cfg.tie_word_embeddings ? 0 : V * d;
  m.train_flops_per_token = pc.train_flops_per_token;
  // What is left is the attention and norms of every layer, alike.
  const double rest = double(pc.total) - double(pc.engram_table) - m.embedding - m.head -
                      moe_layers * (moe_replicated + double(cfg.n_routed_experts) * expert) -
                      (L - moe_layers) * dense_ffn - engram_layers * engram_replicated - d;  // final norm
  for (int l = 0; l < L; ++l) {
    LayerParams p;
    p.replicated = rest / L + (cfg.is_moe_layer(l) ? moe_replicated : dense_ffn);
    if (cfg.is_moe_layer(l)) p.routed = double(cfg.n_routed_experts) * expert;
    if (cfg.engram && cfg.engram->has_layer(l)) {
      p.replicated += engram_replicated;
      p.table = double(pc.engram_table) / engram_layers;
    }
    m.layers.push_back(p);
  }
  return m;
}

// Activation values kept per token by one layer for its backward pass (bf16).
double layer_activations(const ModelConfig& cfg, int layer) {
  const double d = double(cfg.hidden_size), H = double(cfg.num_attention_heads);
  double a = 4 * d;  // residual in, normed input, attention output, residual out
  a += 2 * double(cfg.hc_mult - 1) * d;  // V4's further residual streams, in and out
  if (cfg.attention == AttentionKind::MLA) {
    const double qk = double(cfg.qk_nope_head_dim + cfg.qk_rope_head_dim), v = double(cfg.v_head_dim);
    a += 2 * H * qk + 2 * H * v + double(cfg.kv_lora_rank + cfg.qk_rope_head_dim) + double(cfg.q_lora_rank);
  } else {
    const double hd = double(cfg.head_dim);
    a += 2 * H * hd + 2 * double(cfg.num_key_value_heads) * hd;
  }
  a += 2 * d;  // FFN: normed input, output
  if (cfg.is_moe_layer(layer)) {
    const double F = double(cfg.moe_intermediate_size), k = double(cfg.num_experts_per_tok);
    a += k * (d + 3 * F) + double(cfg.n_shared_experts) * 3 * F + double(cfg.n_routed_experts);
  } else {
    a += 3 * double(cfg.intermediate_size);
  }
  if (cfg.engram && cfg.engram->has_layer(layer)) a += 3 * double(cfg.engram->embed_dim()) + 4 * d;
  return a;
}

double ring_share(int64_t group) { return group > 1 ? double(group - 1) / double(group) : 0.0; }

}  // namespace

DeviceSpec device_preset(const std::string& name) {
  if (name == "h800")
    return {"h800", 80, 989, 160, 50, 8,
            "DeepSeek-V3 report: 989 TFLOP/s bf16 dense, NVLink 160 GB/s and InfiniBand 50 GB/s per GPU "
            "(their measured bandwidths), 8 a node, 80 GB HBM3"};
  if (name == "910b")
    return {"910b", 64, 320, 56, 25, 8,
            "Ascend-910B-like: 64 GB HBM2e, ~320 TFLOP/s fp16/bf16 dense, HCCS ~56 GB/s per device within "
            "a node of 8, 200 Gb/s RoCE (25 GB/s) between nodes; round public spec-sheet figures"};
  if (name == "h100")
    return {"h100", 80, 989, 450, 50, 8,
            "H100 SXM: 989 TFLOP/s bf16 dense, NVLink 900 GB/s bidirectional (450 a direction), 400 Gb/s "
            "InfiniBand (50 GB/s), 80 GB"};
  fail("unknown device preset '", name, "' (known: h800, 910b, h100)");
}

std::vector<std::string> device_preset_names() { return {"h800", "910b", "h100"}; }

const char* engram_placement_name(EngramPlacement p) {
  return p == EngramPlacement::device ? "device" : p == EngramPlacement::host ? "host" : "sharded";
}

PlanResult plan_layout(const ModelConfig& cfg, const PlanSettings& s, const Layout& layout) {
  const Layout& y = layout;
  const int L = cfg.num_hidden_layers;
  MEMOE_CHECK(s.devices > 0 && s.device.memory_gb > 0 && s.device.tflops > 0 && s.device.link_gbps > 0 &&
                  s.device.inter_node_gbps > 0,
              "plan: devices, memory, TFLOP/s and both bandwidths must be > 0");
  MEMOE_CHECK(s.mfu > 0 && s.mfu <= 1, "plan: --mfu must be in (0, 1], got ", s.mfu);
  MEMOE_CHECK(y.dp >= 1 && y.pp >= 1 && y.ep >= 1 && y.dp * y.pp == s.devices, "plan: layout dp ", y.dp, " x pp ",
              y.pp, " is not the ", s.devices, " devices");
  MEMOE_CHECK(y.pp <= L, "plan: pp ", y.pp, " is more stages than the ", L, " layers");
  MEMOE_CHECK(y.dp % y.ep == 0 && (cfg.n_routed_experts > 0 ? cfg.n_routed_experts % y.ep == 0 : y.ep == 1),
              "plan: ep ", y.ep, " must divide dp ", y.dp, " and the ", cfg.n_routed_experts, " routed experts");
  MEMOE_CHECK(s.global_batch % (y.dp * s.micro_batch) == 0, "plan: a global batch of ", s.global_batch,
              " sequences does not split into micro-batches of ", s.micro_batch, " over dp ", y.dp);
  MEMOE_CHECK(cfg.engram || y.engram == EngramPlacement::device, "plan: the model has no Engram tables to place");
  const ModelShape m = shape_of(cfg, s.seq_len);
  const double d = double(cfg.hidden_size);
  const double micro_tokens = double(s.micro_batch * s.seq_len);
  const double rank_tokens = double(s.global_batch) * double(s.seq_len) / double(y.dp);  // a step, per dp rank
  PlanResult r;
  r.layout = y;
  r.micro_batches = s.global_batch / (y.dp * s.micro_batch);
  const double mb = double(r.micro_batches), p = double(y.pp);
  r.bubble = (p - 1) / (mb + p - 1);
  const int64_t expert_group = y.dp / y.ep;  // ranks holding the same experts

  // Stages: contiguous, ceil(L / pp) layers each (the last may have fewer).
  const int per_stage = (L + int(y.pp) - 1) / int(y.pp);
  double worst_memory = -1;
  for (int stage = 0; stage < y.pp; ++stage) {
    const int first = stage * per_stage, last = std::min(L, first + per_stage);
    double replicated = 0, routed = 0, table = 0, acts = 0, max_layer_acts = 0;
    int moe = 0, engram = 0;
    for (int l = first; l < last; ++l) {
      replicated += m.layers[size_t(l)].replicated;
      routed += m.layers[size_t(l)].routed / double(y.ep);
      table += m.layers[size_t(l)].table;
      moe += cfg.is_moe_layer(l);
      engram += m.layers[size_t(l)].table > 0;
      const double a = layer_activations(cfg, l);
      acts += a;
      max_layer_acts = std::max(max_layer_acts, a);
    }
    if (stage == 0) replicated += m.embedding;
    if (stage == y.pp - 1) replicated += m.head + d;
    PlanMemory mem;
    mem.weights = kBf16 * (replicated + routed);
    mem.gradients = kFp32 * (replicated + routed);
    // ZeRO-1: fp32 master weights and AdamW's two moments, sharded over the
    // ranks that hold the same parameters.
    mem.optimizer = 3 * kFp32 * (replicated / double(y.dp) + routed / double(expert_group));
    // 1F1B: stage i holds min(pp - i, m) micro-batches' activations at once.
    const double in_flight = std::min(double(y.pp - stage), mb);
    const double kept = y.recompute ? 2 * d * (last - first) * in_flight + max_layer_acts : acts * in_flight;
    mem.activations = kBf16 * micro_tokens * kept;
    if (stage == y.pp - 1) mem.activations += kFp32 * micro_tokens * double(cfg.vocab_size);  // logits
    const double step_rows =
        cfg.engram ? rank_tokens * double(cfg.engram->tables_per_layer() * cfg.engram->head_dim()) * engram : 0;
    if (y.engram == EngramPlacement::device) mem.engram = kBf16 * table + 3 * kFp32 * table / double(y.dp);
    if (y.engram == EngramPlacement::sharded) mem.engram = (kBf16 + 3 * kFp32) * table / double(y.dp);
    if (table > 0) mem.engram += kFp32 * step_rows / mb;  // one micro-batch's rows and their gradients
    if (y.ep > 1) mem.buffers += 2 * kBf16 * micro_tokens * double(cfg.num_experts_per_tok) * d;
    if (y.pp > 1) mem.buffers += 2 * kBf16 * micro_tokens * d;

    PlanComm comm;
    const double dense_ring = ring_share(y.dp), expert_ring = ring_share(expert_group);
    // Gradients reduce-scattered, then parameters all-gathered, in bf16.
    comm.data_parallel = 2 * kBf16 * (dense_ring * replicated + expert_ring * routed);
    // Dispatch and combine forward, both again backward (and once more to recompute).
    comm.expert_parallel = (y.recompute ? 6 : 4) * kBf16 * rank_tokens * double(cfg.num_experts_per_tok) * d *
                           ring_share(y.ep) * moe;
    comm.pipeline = kBf16 * rank_tokens * d * double((stage < y.pp - 1) + (stage > 0));
    if (y.engram == EngramPlacement::sharded) comm.engram = 2 * kBf16 * step_rows * ring_share(y.dp);
    const double memory = mem.total();
    if (memory > worst_memory) {
      worst_memory = memory;
      r.memory = mem;
    }
    // The busiest stage sets the step: the most communication.
    if (comm.total() > r.comm.total()) r.comm = comm;
  }
  r.fits = r.memory.total() <= s.device.memory_gb * 1e9 * (1 - s.memory_reserve);

  const double tokens_per_step = double(s.global_batch) * double(s.seq_len);
  const double flops = m.train_flops_per_token * tokens_per_step * (y.recompute ? 4.0 / 3.0 : 1.0);
  r.compute_s = flops / (double(s.devices) * s.device.tflops * 1e12 * s.mfu) / (1 - r.bubble);
  const double node = double(s.device.per_node);
  const double inter = s.device.inter_node_gbps * 1e9, intra = s.device.link_gbps * 1e9;
  // Groups that fit in a node use its links; dp and pp groups span nodes.
  r.comm_s = r.comm.data_parallel / inter + r.comm.expert_parallel / (double(y.ep) <= node ? intra : inter) +
             r.comm.pipeline / inter + r.comm.engram / inter;
  // Communication overlaps computation (DualPipe, ZeRO's bucketed reduce):
  // the step is the longer of the two.
  r.step_s = std::max(r.compute_s, r.comm_s);
  r.tokens_per_s = tokens_per_step / r.step_s;
  r.device_hours = r.step_s * double(s.devices) * (s.tokens / tokens_per_step) / 3600.0;
  return r;
}

std::vector<PlanResult> plan_all(const ModelConfig& cfg, const PlanSettings& s) {
  std::vector<PlanResult> out;
  std::vector<EngramPlacement> placements = {EngramPlacement::device};
  if (cfg.engram) placements = {EngramPlacement::device, EngramPlacement::host, EngramPlacement::sharded};
  for (int64_t pp = 1; pp <= cfg.num_hidden_layers && pp <= s.devices; pp *= 2) {
    if (s.devices % pp != 0) continue;
    const int64_t dp = s.devices / pp;
    if (s.global_batch % (dp * s.micro_batch) != 0) continue;
    for (int64_t ep = 1; ep <= dp; ep *= 2) {
      if (dp % ep != 0 || (cfg.n_routed_experts > 0 ? cfg.n_routed_experts % ep != 0 : ep > 1)) continue;
      for (bool recompute : {false, true})
        for (EngramPlacement e : placements) out.push_back(plan_layout(cfg, s, {dp, pp, ep, recompute, e}));
    }
  }
  std::stable_sort(out.begin(), out.end(), [](const PlanResult& a, const PlanResult& b) {
    if (a.fits != b.fits) return a.fits;
    return a.fits ? a.step_s < b.step_s : a.memory.total() < b.memory.total();
  });
  return out;
}

double implied_mfu(const ModelConfig& cfg, const PlanSettings& s, const Layout& layout, double device_hours) {
  MEMOE_CHECK(device_hours > 0, "plan: the published device-hours must be > 0");
  auto hours_at = [&](double mfu) {
    PlanSettings t = s;
    t.mfu = mfu;
    return plan_layout(cfg, t, layout).device_hours;
  };
  MEMOE_CHECK(hours_at(1.0) <= device_hours, "plan: ", device_hours,
              " device-hours is below what this layout needs even at MFU 1 (", hours_at(1.0), ")");
  double lo = 1e-4, hi = 1.0;  // device-hours fall as MFU rises
  for (int i = 0; i < 100; ++i) {
    const double mid = 0.5 * (lo + hi);
    (hours_at(mid) > device_hours ? lo : hi) = mid;
  }
  const double mfu = 0.5 * (lo + hi);
  PlanSettings at = s;
  at.mfu = mfu;
  const PlanResult r = plan_layout(cfg, at, layout);
  // Communication-bound, the figure would hold for any MFU above this one.
  MEMOE_CHECK(r.compute_s > r.comm_s * (1 + 1e-9), "plan: at ", device_hours,
              " device-hours this layout's step is set by its communication (", r.comm_s,
              " s), not its compute: no MFU follows");
  return mfu;
}

}  // namespace memoe
