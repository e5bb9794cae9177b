// memoe analyze routing --model DIR... --data FILE... --out DIR: per MoE
// layer, the experts' load and their use by domain, each expert's
// specialisation, and, for several models (seeds, or checkpoints of one
// run), how consistent the specialisation is with the first model's.
#include <cstdio>
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/labelled_data.h"
#include "cli/precision_option.h"
#include "core/error.h"
#include "eval/plot.h"
#include "eval/routing.h"
#include "io/atomic_file.h"
#include "model/checkpoint.h"

namespace memoe::cli {

namespace {

using nlohmann::json;

struct Options {
  std::vector<std::string> models, data;
  std::string label_field = "genre", out, precision;
  int64_t seq_len = 512, tokens_per_domain = 16384;
};

json layer_json(const LayerRouting& r) {
  return {{"layer", r.layer},
          {"load_max_over_mean", r.load_max_over_mean},
          {"load_cv", r.load_cv},
          {"load_entropy", r.load_entropy},
          {"mean_specialisation", r.mean_specialisation},
          {"specialisation", r.specialisation},
          {"usage", r.usage}};
}

// Domain x expert heatmap of one layer: each expert's share of the domain's
// slots over the share a balanced router gives it (1 = its fair share).
void write_usage_png(const std::string& path, const std::string& model, const LayerRouting& r,
                     const std::vector<std::string>& domains) {
  Heatmap map;
  const size_t E = r.usage[0].size();
  map.title = model + ", layer " + std::to_string(r.layer) + ": expert use by domain";
  map.x_label = "routed expert";
  map.y_label = "domain";
  for (size_t e = 0; e < E; ++e) map.column_labels.push_back(std::to_string(e));
  map.row_labels = domains;
  for (const auto& row : r.usage) {
    std::vector<double> rel;
    for (double f : row) rel.push_back(f * double(E));
    map.values.push_back(rel);
  }
  map.scale_min = 0;
  map.scale_max = 3;
  map.decimals = 1;
  map.scale_label = "share / fair share";
  map.width = std::max(800, int(60 + 34 * E));
  map.height = std::max(500, int(160 + 30 * domains.size()));
  write_heatmap_png(path, map);
}

void run_routing(const Options& o) {
  MEMOE_CHECK(!o.models.empty(), "analyze routing: --model DIR... is required");
  MEMOE_CHECK(!o.out.empty(), "analyze routing: --out DIR is required");
  MEMOE_CHECK(o.seq_len > 0, "analyze routing: --seq must be > 0, got ", o.seq_len);
  std::filesystem::create_directories(o.out);
  json report = {{"label_field", o.label_field}, {"window", o.seq_len}, {"models", json::array()}};
  std::vector<std::vector<LayerRouting>> summaries;
  LinePlot spec{"Expert specialisation by layer (0: used alike by every domain, 1: by one)", "MoE layer",
                "mean specialisation", {}};
  // The first model's tokenizer tokenizes the text for every model: they
  // are compared on the same tokens.
  const LabelledIds data =
      labelled_ids(Tokenizer::load(resolve_model_dir(o.models[0])), o.data, o.label_field, o.tokens_per_domain);
  report["domains"] = data.domains;
  for (size_t mi = 0; mi < o.models.size(); ++mi) {
    const std::string dir = resolve_model_dir(o.models[mi]);
    Model model = load_model(dir);
    apply_precision(model, o.precision, mi == 0);
    const RoutingCounts counts = count_routing(model, data.domains, data.ids, o.seq_len);
    if (mi == 0) report["tokens"] = counts.tokens;
    summaries.push_back(summarise_routing(counts));
    json m = {{"model", dir}, {"experts", counts.experts}, {"layers", json::array()}};
    Series s{o.models[mi], {}, {}};
    for (const LayerRouting& r : summaries.back()) {
      m["layers"].push_back(layer_json(r));
      s.x.push_back(r.layer);
      s.y.push_back(r.mean_specialisation);
      std::printf("model %zu layer %d: load max/mean %.2f, cv %.3f, entropy %.3f, specialisation %.3f\n", mi,
                  r.layer, r.load_max_over_mean, r.load_cv, r.load_entropy, r.mean_specialisation);
    }
    spec.series.push_back(std::move(s));
    if (mi == 0)
      for (const LayerRouting& r : summaries.back())
        write_usage_png(o.out + "/usage_layer" + std::to_string(r.layer) + ".png",
                        o.models[mi], r, data.domains);
    report["models"].push_back(std::move(m));
  }
  json consistency = json::array();
  for (size_t mi = 1; mi < summaries.size(); ++mi) {
    json c = {{"a", 0}, {"b", mi}, {"layers", json::array()}};
    for (const LayerConsistency& l : routing_consistency(summaries[0], summaries[mi])) {
      c["layers"].push_back({{"layer", l.layer},
                             {"matched_correlation", l.matched_correlation},
                             {"identity_correlation", l.identity_correlation},
                             {"null_correlation", l.null_correlation},
                             {"match", l.match}});
      std::printf("model %zu vs 0, layer %d: matched profile correlation %.3f (same index %.3f, shuffled domains %.3f)\n",
                  mi, l.layer, l.matched_correlation, l.identity_correlation, l.null_correlation);
    }
    consistency.push_back(std::move(c));
  }
  report["consistency"] = consistency;
  write_line_plot_png(o.out + "/specialisation.png", spec);
  write_file_atomic(o.out + "/routing.json", report.dump(1) + "\n");
  std::printf("wrote %s/routing.json, usage_layer*.png, specialisation.png\n", o.out.c_str());
}

}  // namespace

void add_analyze_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("analyze", "Analyses of trained models");
  cmd->require_subcommand(1);
  auto o = std::make_shared<Options>();
  CLI::App* routing = cmd->add_subcommand(
      "routing", "Expert load, use by domain, specialisation and its consistency across models or checkpoints");
  routing->add_option("--model", o->models, "model directories; the others are compared with the first")
      ->expected(1, -1);
  routing->add_option("--data", o->data, "labelled JSONL files ({\"text\": ..., LABEL: ...} a line)")
      ->expected(1, -1)
      ->required();
  routing->add_option("--labels", o->label_field, "the records' label field")->capture_default_str();
  routing->add_option("--tokens-per-domain", o->tokens_per_domain, "tokens read per domain (0: all)")
      ->capture_default_str();
  routing->add_option("--seq", o->seq_len, "window length")->capture_default_str();
  routing->add_option("--out", o->out, "output directory");
  add_precision_option(routing, o->precision);
  routing->callback([o] { run_routing(*o); });
}

}  // namespace memoe::cli
