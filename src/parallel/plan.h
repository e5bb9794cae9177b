// The cost planner behind memoe plan: for a config on N devices, every
// DP x PP x EP layout with its per-device memory, communication volume,
// pipeline bubble and estimated step time. Every figure is a closed formula
// of the config and the layout, written out in docs/distributed.md; the
// tests recompute them by hand. Estimates, not measurements: the one free
// constant, the compute efficiency (MFU), is calibrated on a published run
// (implied_mfu) and stated with every answer.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "io/config.h"

namespace memoe {

struct DeviceSpec {
  std::string name;
  double memory_gb = 0;         // usable device memory, GB (1e9 bytes)
  double tflops = 0;            // dense bf16 peak, TFLOP/s
  double link_gbps = 0;         // within a node, per device and direction, GB/s
  double inter_node_gbps = 0;   // between nodes, per device and direction, GB/s
  int per_node = 8;             // devices sharing the fast link
  std::string source;           // where the figures come from
};

// The presets (docs/distributed.md gives their sources); throws for an
// unknown name.
DeviceSpec device_preset(const std::string& name);
std::vector<std::string> device_preset_names();

enum class EngramPlacement { device, host, sharded };
const char* engram_placement_name(EngramPlacement p);

struct PlanSettings {
  int64_t devices = 0;
  DeviceSpec device;
  double mfu = 0.3;                          // compute efficiency inside a stage's work
  int64_t seq_len = 4096;
  int64_t global_batch = 15360;              // sequences a step (DeepSeek-V3's final batch)
  int64_t micro_batch = 1;                   // sequences a micro-batch
  double tokens = 1e12;                      // token budget for the device-hours
  double memory_reserve = 0.1;               // share of device memory kept free (fragmentation, workspace)
};

struct Layout {
  int64_t dp = 1, pp = 1, ep = 1;
  bool recompute = false;
  EngramPlacement engram = EngramPlacement::device;
};

// Bytes per device, for the heaviest pipeline stage.
struct PlanMemory {
  double weights = 0, gradients = 0, optimizer = 0, activations = 0, engram = 0, buffers = 0;
  double total() const { return weights + gradients + optimizer + activations + engram + buffers; }
};

// Bytes one device sends in a step, by kind.
struct PlanComm {
  double data_parallel = 0;    // ZeRO-1: gradient reduce-scatter + parameter all-gather
  double expert_parallel = 0;  // token dispatch and combine, forward and backward
  double pipeline = 0;         // activations forward, their gradients backward
  double engram = 0;           // sharded tables: rows fetched, row gradients returned
  double total() const { return data_parallel + expert_parallel + pipeline + engram; }
};

struct PlanResult {
  Layout layout;
  PlanMemory memory;
  PlanComm comm;
  bool fits = false;
  int64_t micro_batches = 0;  // per data-parallel rank a step
  double bubble = 0;          // (p - 1) / (m + p - 1) of the step
  double compute_s = 0, comm_s = 0, step_s = 0, tokens_per_s = 0, device_hours = 0;
};

// One layout's figures; a layout that cannot exist (dp * pp != devices, ep
// not dividing dp or the expert count, pp above the layers, a global batch
// the ranks cannot split) gets one line naming it.
PlanResult plan_layout(const ModelConfig& cfg, const PlanSettings& s, const Layout& layout);

// Every valid layout (powers of two for pp and ep, recomputation off and on,
// each Engram placement where the model has Engram), fitting ones first,
// fastest first.
std::vector<PlanResult> plan_all(const ModelConfig& cfg, const PlanSettings& s);

// The MFU at which `layout` takes `device_hours` per `s.tokens` tokens.
double implied_mfu(const ModelConfig& cfg, const PlanSettings& s, const Layout& layout, double device_hours);

}  // namespace memoe
