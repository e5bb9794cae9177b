// memoe plan CONFIG --devices N [--device PRESET] [...]: every DP x PP x EP
// layout's per-device memory, communication, bubble and estimated step time
// (parallel/plan.h), the best few printed; --calibrate H gives the MFU at which
// --layout takes H device-hours for --tokens.
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "cli/commands.h"
#include "core/error.h"
#include "parallel/plan.h"
#include "io/config.h"

namespace memoe::cli {

namespace {

struct Options {
  std::string config, device = "h800", layout;
  int64_t devices = 0;
  double memory_gb = 0, tflops = 0, link = 0, inter_node = 0, calibrate = 0;
  PlanSettings settings;
  int top = 5;
  bool json = false;
};

// "dp128,pp16,ep64[,recompute][,engram=host|sharded]": every item known,
// dp, pp and ep each given once.
Layout parse_layout(const std::string& text) {
  Layout y;
  y.dp = y.pp = y.ep = 0;
  const std::string form = "dp128,pp16,ep64[,recompute][,engram=device|host|sharded]";
  std::stringstream items(text);
  for (std::string item; std::getline(items, item, ',');) {
    int64_t* size = item.rfind("dp", 0) == 0 ? &y.dp : item.rfind("pp", 0) == 0 ? &y.pp
                  : item.rfind("ep", 0) == 0 ? &y.ep : nullptr;
    if (size) {
      const std::string digits = item.substr(2);
      MEMOE_CHECK(*size == 0 && !digits.empty() && digits.size() < 10 &&
                      digits.find_first_not_of("0123456789") == std::string::npos,
                  "plan: --layout '", text, "' is not of the form ", form);
      *size = std::stoll(digits);
    } else if (item == "recompute") {
      y.recompute = true;
    } else if (item == "engram=device" || item == "engram=host" || item == "engram=sharded") {
      y.engram = item == "engram=device" ? EngramPlacement::device
                 : item == "engram=host" ? EngramPlacement::host : EngramPlacement::sharded;
    } else {
      fail("plan: --layout '", text, "': unknown item '", item, "' (expected ", form, ")");
    }
  }
  MEMOE_CHECK(y.dp > 0 && y.pp > 0 && y.ep > 0, "plan: --layout '", text,
              "' needs dpN, ppN and epN (e.g. dp128,pp16,ep64)");
  return y;
}

std::string gb(double bytes) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f", bytes / 1e9);
  return b;
}

// One JSON object a line, every figure in bytes and seconds (for scripts:
// bench/expert_parallel.sh compares its measured all-to-all volume).
void print_json_row(const PlanResult& r) {
  const Layout& y = r.layout;
  const nlohmann::json j = {
      {"dp", y.dp}, {"pp", y.pp}, {"ep", y.ep}, {"recompute", y.recompute},
      {"engram", engram_placement_name(y.engram)}, {"fits", r.fits},
      {"memory_bytes", {{"weights", r.memory.weights}, {"gradients", r.memory.gradients},
                        {"optimizer", r.memory.optimizer}, {"activations", r.memory.activations},
                        {"engram", r.memory.engram}, {"buffers", r.memory.buffers}, {"total", r.memory.total()}}},
      {"sent_bytes_per_step", {{"data_parallel", r.comm.data_parallel}, {"expert_parallel", r.comm.expert_parallel},
                               {"pipeline", r.comm.pipeline}, {"engram", r.comm.engram}}},
      {"micro_batches", r.micro_batches}, {"bubble", r.bubble}, {"compute_s", r.compute_s}, {"comm_s", r.comm_s},
      {"step_s", r.step_s}, {"tokens_per_s", r.tokens_per_s}, {"device_hours", r.device_hours}};
  std::printf("%s\n", j.dump().c_str());
}

void print_row(const PlanResult& r, double tokens, bool json) {
  if (json) return print_json_row(r);
  const Layout& y = r.layout;
  std::printf("dp %4lld pp %2lld ep %3lld %-9s engram %-7s | %6s GB (weights %s, grads %s, optimizer %s, "
              "activations %s, engram %s, buffers %s)%s | bubble %.3f (m %lld) | sent/step GB: dp %s ep %s pp %s "
              "engram %s | step %.2f s (compute %.2f, comm %.2f) | %.0f tokens/s | %.3g device-hours per %.3g tokens\n",
              (long long)y.dp, (long long)y.pp, (long long)y.ep, y.recompute ? "recompute" : "", 
              engram_placement_name(y.engram), gb(r.memory.total()).c_str(), gb(r.memory.weights).c_str(),
              gb(r.memory.gradients).c_str(), gb(r.memory.optimizer).c_str(), gb(r.memory.activations).c_str(),
              gb(r.memory.engram).c_str(), gb(r.memory.buffers).c_str(), r.fits ? "" : " DOES NOT FIT", r.bubble,
              (long long)r.micro_batches, gb(r.comm.data_parallel).c_str(), gb(r.comm.expert_parallel).c_str(),
              gb(r.comm.pipeline).c_str(), gb(r.comm.engram).c_str(), r.step_s, r.compute_s, r.comm_s,
              r.tokens_per_s, r.device_hours, tokens);
}

void run(Options o) {
  const ModelConfig cfg = load_config(o.config);
  PlanSettings& s = o.settings;
  s.devices = o.devices;
  s.device = device_preset(o.device);
  if (o.memory_gb > 0) s.device.memory_gb = o.memory_gb;
  if (o.tflops > 0) s.device.tflops = o.tflops;
  if (o.link > 0) s.device.link_gbps = o.link;
  if (o.inter_node > 0) s.device.inter_node_gbps = o.inter_node;
  MEMOE_CHECK(s.devices > 0, "plan: --devices must be > 0");
  std::printf("%s on %lld x %s (%.0f GB, %.0f TFLOP/s bf16, links %.0f / %.0f GB/s), MFU %.3f, batch %lld x %lld "
              "tokens, micro-batch %lld\n",
              o.config.c_str(), (long long)s.devices, s.device.name.c_str(), s.device.memory_gb, s.device.tflops,
              s.device.link_gbps, s.device.inter_node_gbps, s.mfu, (long long)s.global_batch, (long long)s.seq_len,
              (long long)s.micro_batch);
  if (o.calibrate > 0) {
    MEMOE_CHECK(!o.layout.empty(), "plan: --calibrate needs the run's --layout");
    const Layout y = parse_layout(o.layout);
    const double mfu = implied_mfu(cfg, s, y, o.calibrate);
    s.mfu = mfu;
    std::printf("%.6g device-hours per %.3g tokens on %s implies MFU %.4f\n", o.calibrate, s.tokens,
                o.layout.c_str(), mfu);
    print_row(plan_layout(cfg, s, y), s.tokens, o.json);
    return;
  }
  if (!o.layout.empty()) {
    print_row(plan_layout(cfg, s, parse_layout(o.layout)), s.tokens, o.json);
    return;
  }
  const std::vector<PlanResult> all = plan_all(cfg, s);
  MEMOE_CHECK(!all.empty(), "plan: no layout of ", s.devices, " devices splits a batch of ", s.global_batch,
              " sequences");
  if (!all.front().fits) {
    const PlanResult& r = all.front();
    std::printf("nothing fits: the leanest layout (dp %lld, pp %lld, ep %lld%s, engram %s) needs %s GB a device "
                "against %.0f GB less a %.0f %% reserve\n",
                (long long)r.layout.dp, (long long)r.layout.pp, (long long)r.layout.ep,
                r.layout.recompute ? ", recompute" : "", engram_placement_name(r.layout.engram),
                gb(r.memory.total()).c_str(), s.device.memory_gb, 100 * s.memory_reserve);
    print_row(r, s.tokens, o.json);
    return;
  }
  int shown = 0, fitting = 0;
  for (const PlanResult& r : all) fitting += r.fits;
  std::printf("%d of %zu layouts fit; the fastest:\n", fitting, all.size());
  for (const PlanResult& r : all) {
    if (!r.fits || shown++ >= o.top) break;
    print_row(r, s.tokens, o.json);
  }
}

}  // namespace

void add_plan_command(CLI::App& app) {
  auto o = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand(
      "plan", "Per-device memory, communication and step time of every DP x PP x EP layout (estimates)");
  cmd->add_option("config", o->config, "model config")->required();
  cmd->add_option("--devices", o->devices, "devices")->required();
  cmd->add_option("--device", o->device, "preset: h800, 910b (Ascend-910B-like), h100")->capture_default_str();
  cmd->add_option("--device-mem", o->memory_gb, "device memory, GB (overrides the preset)");
  cmd->add_option("--tflops", o->tflops, "dense bf16 TFLOP/s (overrides the preset)");
  cmd->add_option("--link", o->link, "GB/s per device within a node (overrides the preset)");
  cmd->add_option("--inter-node", o->inter_node, "GB/s per device between nodes (overrides the preset)");
  cmd->add_option("--mfu", o->settings.mfu, "compute efficiency inside a stage's work")->capture_default_str();
  cmd->add_option("--tokens", o->settings.tokens, "token budget for the device-hours")->capture_default_str();
  cmd->add_option("--seq", o->settings.seq_len, "sequence length")->capture_default_str();
  cmd->add_option("--global-batch", o->settings.global_batch, "sequences a step")->capture_default_str();
  cmd->add_option("--micro-batch", o->settings.micro_batch, "sequences a micro-batch")->capture_default_str();
  cmd->add_option("--top", o->top, "layouts shown")->capture_default_str();
  cmd->add_option("--layout", o->layout, "one layout, e.g. dp128,pp16,ep64[,recompute][,engram=host|sharded]");
  cmd->add_flag("--json", o->json, "each layout as one JSON line (bytes and seconds)");
  cmd->add_option("--calibrate", o->calibrate,
                  "published device-hours for --tokens on --layout: print the MFU they imply");
  cmd->callback([o] { run(*o); });
}

}  // namespace memoe::cli
