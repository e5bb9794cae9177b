// memoe params CONFIG: parameter counts, FLOPs and memory from a config.
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "cli/commands.h"
#include "model/attention.h"
#include "model/param_count.h"

namespace memoe::cli {

namespace {

// 1.23 M, 37.6 B, 0.999 T: the unit that keeps the value in [0.5, 500).
std::string human(double x, const char* unit, bool count = false) {
  const char* flops[] = {"", " K", " M", " G", " T", " P"};
  const char* counts[] = {"", " K", " M", " B", " T", " P"};
  int i = 0;
  while (x >= 500.0 && i < 5) {
    x /= 1000.0;
    ++i;
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3f%s%s", x, (count ? counts : flops)[i], unit);
  return buf;
}

std::string bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  int i = 0;
  while (b >= 1024.0 && i < 5) {
    b /= 1024.0;
    ++i;
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f %s", b, units[i]);
  return buf;
}

struct Options {
  std::string config;
  int64_t seq_len = 4096;
  int64_t batch = 1;
  bool json = false;
};

void run(const Options& o) {
  const ModelConfig cfg = load_config(o.config);
  const ParamCount pc = count_params(cfg, o.seq_len);
  const double total = double(pc.total);
  const double act = activation_bytes(cfg, o.batch, o.seq_len);
  const double act_bf16 = activation_bytes(cfg, o.batch, o.seq_len, Precision::bf16);
  const double step_fp32 = training_state_bytes(cfg, o.batch, o.seq_len);
  const double step_bf16 = training_state_bytes(cfg, o.batch, o.seq_len, Precision::bf16);
  if (o.json) {
    nlohmann::json j = {{"total_params", pc.total},
                        {"active_params", pc.active},
                        {"engram_table_params", pc.engram_table},
                        {"embedding_params", pc.embedding},
                        {"forward_flops_per_token", pc.forward_flops_per_token},
                        {"train_flops_per_token", pc.train_flops_per_token},
                        {"seq_len", o.seq_len},
                        {"weights_bytes_fp32", 4 * total},
                        {"weights_bytes_bf16", 2 * total},
                        {"grads_bytes_fp32", 4 * total},
                        {"grads_bytes_bf16", 2 * total},
                        {"adam_bytes_fp32", 8 * total},
                        {"adam_bytes_bf16", 4 * total},
                        {"activation_bytes", act},
                        {"training_step_bytes", step_fp32},
                        {"bf16_copy_params", pc.bf16_copies},
                        {"kv_cache_bytes_per_token", kv_cache_bytes_per_token(cfg) * cfg.num_hidden_layers},
                        {"activation_bytes_bf16_training", act_bf16},
                        {"training_step_bytes_bf16_training", step_bf16}};
    if (cfg.is_v4()) {
      const V4CacheBytes cache = v4_cache_bytes(cfg);
      j["mtp_params"] = pc.mtp;
      j["mtp_active_params"] = pc.mtp_active;
      j["total_params_without_mtp"] = pc.total - pc.mtp;
      j["active_params_without_mtp"] = pc.active - pc.mtp_active;
      j["hash_routing_entries"] = pc.hash_routing_entries;
      j["v4_window_cache_bytes"] = cache.window;
      j["v4_cache_bytes_per_token"] = cache.per_token;
    }
    std::printf("%s\n", j.dump(2).c_str());
    return;
  }
  std::printf("config                  %s\n", o.config.c_str());
  std::printf("total parameters        %s (%lld)\n", human(total, "", true).c_str(), (long long)pc.total);
  std::printf("active per token        %s (%lld)\n", human(double(pc.active), "", true).c_str(), (long long)pc.active);
  if (cfg.is_v4()) {
    // DeepSeek's published totals (284 B / 13 B for V4-Flash) leave the MTP
    // blocks out; docs/v4.md compares them.
    std::printf("  without the MTP blocks %s total (%lld), %s active (%lld); the MTP blocks: %s, %s active\n",
                human(double(pc.total - pc.mtp), "", true).c_str(), (long long)(pc.total - pc.mtp),
                human(double(pc.active - pc.mtp_active), "", true).c_str(), (long long)(pc.active - pc.mtp_active),
                human(double(pc.mtp), "", true).c_str(), human(double(pc.mtp_active), "", true).c_str());
    std::printf("  token-id routing       %lld tid2eid entries (fixed integers, not counted as parameters)\n",
                (long long)pc.hash_routing_entries);
  }
  std::printf("engram tables           %s\n", human(double(pc.engram_table), "", true).c_str());
  std::printf("embedding + lm_head     %s\n", human(double(pc.embedding), "", true).c_str());
  std::printf("forward FLOPs / token   %s  (context %lld, causal)\n", human(pc.forward_flops_per_token, "FLOP").c_str(),
              (long long)o.seq_len);
  std::printf("training FLOPs / token  %s\n", human(pc.train_flops_per_token, "FLOP").c_str());
  std::printf("parameter storage       %-14s %-14s\n", "fp32", "bf16");
  std::printf("  weights               %-14s %-14s\n", bytes(4 * total).c_str(), bytes(2 * total).c_str());
  std::printf("  gradients             %-14s %-14s\n", bytes(4 * total).c_str(), bytes(2 * total).c_str());
  std::printf("  AdamW state (m, v)    %-14s %-14s\n", bytes(8 * total).c_str(), bytes(4 * total).c_str());
  const double kv = double(kv_cache_bytes_per_token(cfg)) * cfg.num_hidden_layers;
  if (cfg.is_v4()) {
    const V4CacheBytes cache = v4_cache_bytes(cfg);
    std::printf("KV cache                %s fp32 of sliding-window rings (whatever the context) + %s per token\n"
                "                        (compressed keys of the CSA/HCA layers)\n",
                bytes(cache.window).c_str(), bytes(cache.per_token).c_str());
  } else if (cfg.attention == AttentionKind::MLA)
    std::printf("KV cache per token      %s fp32 (absorbed MLA: latent + rotary key); expanded per-head k, v: %s\n",
                bytes(kv).c_str(), bytes(double(kv_cache_bytes_per_token(cfg, true)) * cfg.num_hidden_layers).c_str());
  else
    std::printf("KV cache per token      %s fp32 (k and v per kv head)\n", bytes(kv).c_str());
  std::printf("training step (this engine, batch %lld x %lld)\n", (long long)o.batch, (long long)o.seq_len);
  std::printf("                        %-14s %-14s\n", "fp32", "bf16 mixed");
  std::printf("  activations           %-14s %-14s\n", bytes(act).c_str(), bytes(act_bf16).c_str());
  std::printf("  total                 %-14s %-14s\n", bytes(step_fp32).c_str(), bytes(step_bf16).c_str());
  std::printf("  (fp32 weights + dense gradients + AdamW + activations, and for bf16 mixed the weights' bf16\n"
              "   copies; Engram table gradients count only the rows a step reads)\n");
}

}  // namespace

void add_params_command(CLI::App& app) {
  auto opts = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("params", "Count parameters, FLOPs and memory of a config");
  cmd->add_option("config", opts->config, "config.json")->required();
  cmd->add_option("--seq", opts->seq_len, "sequence length for attention FLOPs and activations")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--batch", opts->batch, "batch size for the activation estimate")->check(CLI::PositiveNumber);
  cmd->add_flag("--json", opts->json, "machine-readable output");
  cmd->callback([opts] { run(*opts); });
}

}  // namespace memoe::cli
