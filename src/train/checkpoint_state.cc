#include "train/checkpoint_state.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
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

std::string save_checkpoint(const std::string& run_dir, const Model& model, AdamW& optimizer,
                            const TrainState& state, const std::string& tokenizer_file, int64_t keep_last) {
  const fs::path root = fs::path(run_dir) / "checkpoints";
  std::error_code ec;
  fs::create_directories(root, ec);
  MEMOE_CHECK(!ec, "cannot create ", root.string(), ": ", ec.message());
  const std::string name = step_name(state.step);
  const fs::path tmp = root / ("." + name + ".tmp." + unique_temp_suffix());
  const fs::path final_dir = root / name;
  fs::remove_all(tmp, ec);

  save_model(model, tmp.string());
  SafetensorsWriter w;
  optimizer.first_moment().visit([&](const std::string& n, Tensor& t) { w.add_f32_view("exp_avg." + n, t); });
  optimizer.second_moment().visit([&](const std::string& n, Tensor& t) { w.add_f32_view("exp_avg_sq." + n, t); });
  w.set_metadata("optimizer_steps", std::to_string(optimizer.steps()));
  w.write((tmp / kOptimizerFile).string());
  nlohmann::json j = {{"step", state.step},
                      {"data_cursor", state.data_cursor},
                      {"seed", state.seed},
                      {"tokens_seen", state.tokens_seen},
                      {"optimizer_steps", optimizer.steps()}};
  write_file_atomic((tmp / kStateFile).string(), j.dump(2) + "\n");
  if (!tokenizer_file.empty()) {
    fs::copy_file(tokenizer_file, tmp / "tokenizer.model", fs::copy_options::overwrite_existing, ec);
    MEMOE_CHECK(!ec, "cannot copy ", tokenizer_file, ": ", ec.message());
  }

  // Publish: rename the finished directory, then move the pointer.
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

void load_optimizer_state(const std::string& dir, AdamW& optimizer) {
  SafetensorsFile f = SafetensorsFile::open(dir + "/" + kOptimizerFile);
  auto load = [&](const std::string& prefix) {
    return [&f, prefix](const std::string& n, Tensor& t) {
      const std::string name = prefix + n;
      MEMOE_CHECK(f.has(name), f.path(), ": missing tensor ", name);
      MEMOE_CHECK(f.info(name).shape == t.shape(), f.path(), ": tensor ", name, " has shape ",
                  shape_string(f.info(name).shape), ", expected ", shape_string(t.shape()));
      f.read_f32_into(name, t.data(), t.numel());
    };
  };
  optimizer.first_moment().visit(load("exp_avg."));
  optimizer.second_moment().visit(load("exp_avg_sq."));
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
