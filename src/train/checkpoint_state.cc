#include "train/checkpoint_state.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "parallel/expert_parallel.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "io/safetensors_set.h"
#include "model/checkpoint.h"

namespace memoe {

namespace fs = std::filesystem;

namespace {

const char* kOptimizerFile = "optimizer.safetensors";
const char* kStateFile = "state.json";

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  MEMOE_CHECK(in, "cannot read ", path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string step_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step_%08lld", static_cast<long long>(step));
  return buf;
}

}  // namespace

namespace {

// Which rank writes each parameter's weights in a sharded checkpoint:
// contiguous runs of tensors in visit order, balanced by size (a tensor goes
// to the rank whose share of the values holds its middle).
std::map<std::string, int> weight_writers(const Model& model, int ranks, int expert_shards) {
  std::vector<std::pair<std::string, int64_t>> sizes;
  int64_t total = 0;
  std::map<std::string, int> out;
  const ExpertLayout experts{ranks, expert_shards, model.config.n_routed_experts};
  const_cast<ModelParams&>(model.params).visit([&](const std::string& name, Tensor& t) {
    const int expert = routed_expert_of(name);
    if (expert_shards > 1 && expert >= 0) {
      out[name] = experts.shard_holding(expert);  // ranks 0 .. E-1 are the first EP group
      return;
    }
    sizes.emplace_back(name, t.numel());
    total += t.numel();
  });
  int64_t before = 0;
  for (const auto& [name, n] : sizes) {
    const double middle = double(before) + 0.5 * double(n);
    out[name] = std::min(ranks - 1, int(double(ranks) * middle / double(std::max<int64_t>(total, 1))));
    before += n;
  }
  return out;
}

std::map<std::string, int64_t> parameter_sizes(const Model& model) {
  std::map<std::string, int64_t> out;
  const_cast<ModelParams&>(model.params).visit([&](const std::string& name, Tensor& t) { out[name] = t.numel(); });
  return out;
}

// This rank's moments, each under its piece name (the whole tensor's name
// when the slice is all of it).
void add_moments(SafetensorsWriter& w, const Model& model, const AdamW& optimizer,
                 const std::function<bool(const std::string&)>& keep) {
  const std::map<std::string, int64_t> sizes = parameter_sizes(model);
  for (const AdamW::Moments& mo : optimizer.moments()) {
    if (!keep(mo.slice.name)) continue;
    const int64_t numel = sizes.at(mo.slice.name);
    w.add_f32_view(piece_name("exp_avg." + mo.slice.name, mo.slice.begin, mo.slice.end, numel),
                   {mo.slice.size()}, mo.m.data());
    w.add_f32_view(piece_name("exp_avg_sq." + mo.slice.name, mo.slice.begin, mo.slice.end, numel),
                   {mo.slice.size()}, mo.v.data());
  }
  w.set_metadata("optimizer_steps", std::to_string(optimizer.steps()));
}

// Renames the finished temporary into place, moves the pointer, and keeps
// the newest keep_last checkpoints.
std::string publish(const fs::path& root, const fs::path& tmp, const std::string& name, int64_t keep_last) {
  std::error_code ec;
  const fs::path final_dir = root / name;
  fs::remove_all(final_dir, ec);
  fs::rename(tmp, final_dir, ec);
  MEMOE_CHECK(!ec, "cannot publish checkpoint ", final_dir.string(), ": ", ec.message());
  // checkpoints/latest: a relative symlink, replaced atomically by rename,
  // so RUN/checkpoints/latest works wherever a model directory is taken.
  const fs::path link_tmp = root / (".latest.tmp." + unique_temp_suffix());
  fs::create_directory_symlink(name, link_tmp, ec);
  MEMOE_CHECK(!ec, "cannot create ", link_tmp.string(), ": ", ec.message());
  fs::rename(link_tmp, root / "latest", ec);
  MEMOE_CHECK(!ec, "cannot publish ", (root / "latest").string(), ": ", ec.message());

  // Keep the newest keep_last (never the one just written).
  std::vector<std::string> all;
  for (const auto& entry : fs::directory_iterator(root))
    if (entry.is_directory() && entry.path().filename().string().rfind("step_", 0) == 0)
      all.push_back(entry.path().filename().string());
  std::sort(all.begin(), all.end());
  const int64_t keep = std::max<int64_t>(1, keep_last);
  for (size_t i = 0; i + size_t(keep) < all.size(); ++i)
    if (all[i] != name) fs::remove_all(root / all[i], ec);
  return final_dir.string();
}

}  // namespace

namespace {

// Rank 0's part, once every shard is written: the indexes, the config, the
// state and the tokenizer, then the rename that publishes the directory.
std::string index_and_publish(const fs::path& root, const fs::path& tmp, const std::string& name, const Model& model,
                              const AdamW& optimizer, const TrainState& state, const std::string& tokenizer_file,
                              int64_t keep_last, int ranks) {
  if (ranks > 1) {
    write_safetensors_index(tmp.string(), "model", ranks, {{"format", "pt"}, {"producer", "memoe"}});
    write_safetensors_index(tmp.string(), "optimizer", ranks, {{"optimizer_steps", std::to_string(optimizer.steps())}});
    write_file_atomic((tmp / "config.json").string(), config_to_json(model.config));
  }
  nlohmann::json j = {{"step", state.step},
                      {"data_cursor", state.data_cursor},
                      {"seed", state.seed},
                      {"tokens_seen", state.tokens_seen},
                      {"optimizer_steps", optimizer.steps()}};
  write_file_atomic((tmp / kStateFile).string(), j.dump(2) + "\n");
  if (!tokenizer_file.empty()) {
    std::error_code ec;
    fs::copy_file(tokenizer_file, tmp / "tokenizer.model", fs::copy_options::overwrite_existing, ec);
    MEMOE_CHECK(!ec, "cannot copy ", tokenizer_file, ": ", ec.message());
  }
  return publish(root, tmp, name, keep_last);
}

}  // namespace

std::string save_checkpoint(const std::string& run_dir, const Model& model, AdamW& optimizer,
                            const TrainState& state, const std::string& tokenizer_file, int64_t keep_last,
                            Communicator& world, MomentsLayout moments, double write_timeout_s,
                            int expert_shards, bool sharded_tables, Communicator* holders) {
  Communicator& group = holders ? *holders : world;
  const fs::path root = fs::path(run_dir) / "checkpoints";
  const std::string name = step_name(state.step);
  const int ranks = world.size();
  // Writing shards (and rank 0's indexing and pruning) may take longer than
  // the ranks ever drift apart in a step: the watchdog's own limit here.
  struct TimeoutWhileWriting {
    Communicator& world;
    double saved;
    TimeoutWhileWriting(Communicator& w, double seconds) : world(w), saved(w.collective_timeout()) {
      world.set_collective_timeout(seconds);
    }
    ~TimeoutWhileWriting() { world.set_collective_timeout(saved); }
  } timeout(world, write_timeout_s);
  // One process: a temporary of its own. A world: one temporary every rank
  // can name, created by rank 0 before anyone writes into it.
  const fs::path tmp = root / ("." + name + (ranks == 1 ? ".tmp." + unique_temp_suffix() : std::string(".partial")));
  if (world.is_root()) {
    std::error_code ec;
    fs::create_directories(root, ec);
    MEMOE_CHECK(!ec, "cannot create ", root.string(), ": ", ec.message());
    fs::remove_all(tmp, ec);
    fs::create_directories(tmp, ec);
    MEMOE_CHECK(!ec, "cannot create ", tmp.string(), ": ", ec.message());
  }
  world.barrier();
  auto everything = [](const std::string&) { return true; };
  if (ranks == 1) {
    save_model(model, tmp.string());
    SafetensorsWriter w;
    add_moments(w, model, optimizer, everything);
    w.write((tmp / kOptimizerFile).string());
  } else {
    // Each rank its own shard of the weights and of the moments.
    const std::map<std::string, int> writers = weight_writers(model, group.size(), expert_shards);
    // Sharded tables: each rank's own rows, as pieces.
    TensorPieces pieces;
    if (sharded_tables)
      const_cast<ModelParams&>(model.params).visit([&](const std::string& name, Tensor& t, const ParamRole& role) {
        if (role.update != ParamUpdate::SparseRows) return;
        const int64_t rows = t.dim(0), width = t.numel() / std::max<int64_t>(rows, 1);
        pieces[name] = {group.shard_begin(rows, group.rank()) * width, group.shard_begin(rows, group.rank() + 1) * width};
      });
    auto mine = [&](const std::string& n) {
      if (pieces.count(n)) return false;
      auto it = writers.find(n);
      return it == writers.end() ? world.is_root() : it->second == group.rank();  // integer tensors: rank 0
    };
    save_model_tensors(model, (tmp / shard_file_name("model", world.rank() + 1, ranks)).string(), mine, DType::F32,
                       pieces);
    SafetensorsWriter w;
    auto my_moments = [&](const std::string& n) { return pieces.count(n) || mine(n); };
    add_moments(w, model, optimizer, moments == MomentsLayout::sharded ? std::function<bool(const std::string&)>(everything)
                                                                       : std::function<bool(const std::string&)>(my_moments));
    w.write((tmp / shard_file_name("optimizer", world.rank() + 1, ranks)).string());
  }
  // Every shard is on disk before rank 0 indexes and publishes them; a rank
  // that dies first leaves only the temporary, which a resume removes.
  world.barrier();
  std::string final_dir = (root / name).string();
  if (world.is_root())
    final_dir = index_and_publish(root, tmp, name, model, optimizer, state, tokenizer_file, keep_last, ranks);
  // Returns once the checkpoint is published, so that a rank failing after
  // this may name it as the last good one.
  world.barrier();
  return final_dir;
}

void load_optimizer_state(const std::string& dir, const Model& model, AdamW& optimizer) {
  const SafetensorsSet f = SafetensorsSet::open(dir, "optimizer");
  const std::map<std::string, int64_t> sizes = parameter_sizes(model);
  for (AdamW::Moments& mo : optimizer.moments()) {
    const int64_t numel = sizes.at(mo.slice.name);
    f.read_range("exp_avg." + mo.slice.name, numel, mo.slice.begin, mo.slice.end, mo.m.data());
    f.read_range("exp_avg_sq." + mo.slice.name, numel, mo.slice.begin, mo.slice.end, mo.v.data());
  }
  auto it = f.metadata().find("optimizer_steps");
  MEMOE_CHECK(it != f.metadata().end(), f.path(), ": metadata lacks optimizer_steps");
  try {
    optimizer.set_steps(std::stoll(it->second));
  } catch (const std::exception&) {
    fail(f.path(), ": optimizer_steps '", it->second, "' is not a number");
  }
}

TrainState load_train_state(const std::string& dir) {
  const std::string path = dir + "/" + kStateFile;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_text(path));
    TrainState s;
    s.step = j.at("step").get<int64_t>();
    s.data_cursor = j.at("data_cursor").get<uint64_t>();
    s.seed = j.at("seed").get<uint64_t>();
    s.tokens_seen = j.at("tokens_seen").get<int64_t>();
    MEMOE_CHECK(s.step >= 0, path, ": negative step");
    return s;
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": malformed training state (", e.what(), ")");
  }
}

}  // namespace memoe
