#include "model/checkpoint.h"

#include "model/init.h"
#include "model/param_count.h"

#include <algorithm>
#include <fstream>

#include <filesystem>

#include "core/error.h"
#include "io/atomic_file.h"

namespace memoe {

namespace {

const char* kTokenMap = "model.engram_token_map";

std::string engram_prefix(size_t layer) { return "model.layers." + std::to_string(layer) + ".engram."; }

// V4's fixed token-id routing of layer l, stored as the release stores it (I64 [V, k]).
std::string tid2eid_name(size_t layer) { return "layers." + std::to_string(layer) + ".ffn.gate.tid2eid"; }

void make_dir(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  MEMOE_CHECK(!ec, "cannot create directory ", dir, ": ", ec.message());
}

std::vector<int64_t> read_i64_shaped(const SafetensorsSet& f, const std::string& name, int64_t count) {
  MEMOE_CHECK(f.has(name), f.path(), ": missing tensor ", name);
  const TensorInfo& info = f.info(name);
  MEMOE_CHECK(info.shape == std::vector<int64_t>{count}, f.path(), ": tensor ", name, " has shape ",
              shape_string(info.shape), ", expected [", count, "]");
  return f.read_i64(name);
}

}  // namespace

void save_model_tensors(const Model& m, const std::string& file, const std::function<bool(const std::string&)>& keep,
                        DType dtype, const TensorPieces& pieces) {
  MEMOE_CHECK(dtype == DType::F32 || dtype == DType::BF16, "checkpoints store F32 or BF16 weights");
  SafetensorsWriter w;
  // visit() only hands out references; nothing here modifies the tensors.
  const_cast<ModelParams&>(m.params).visit([&](const std::string& name, Tensor& t) {
    if (auto piece = pieces.find(name); piece != pieces.end()) {
      const auto [begin, end] = piece->second;
      MEMOE_CHECK(0 <= begin && begin <= end && end <= t.numel(), "a piece of ", name, " outside it");
      if (end > begin) w.add_f32_view(piece_name(name, begin, end, t.numel()), {end - begin}, t.data() + begin);
      return;
    }
    if (!keep(name)) return;
    if (dtype == DType::F32)
      w.add_f32_view(name, t);  // no second copy of the weights
    else
      w.add_f32(name, t, dtype);
  });
  // A V4 checkpoint holds the release's tensors only (DeepSeek's loader is
  // strict); it has no Engram, so no token map.
  if (!m.config.is_v4() && keep(kTokenMap))
    w.add_i64(kTokenMap, {int64_t(m.token_map.size())}, m.token_map.data());
  for (size_t l = 0; l < m.engram_hash.size(); ++l) {
    const EngramHash& h = m.engram_hash[l];
    if (h.primes.empty()) continue;
    if (keep(engram_prefix(l) + "hash_multipliers"))
      w.add_i64(engram_prefix(l) + "hash_multipliers", {int64_t(h.multipliers.size())}, h.multipliers.data());
    if (keep(engram_prefix(l) + "table_sizes"))
      w.add_i64(engram_prefix(l) + "table_sizes", {int64_t(h.primes.size())}, h.primes.data());
  }
  std::vector<std::vector<int64_t>> tables;  // alive until write()
  for (size_t l = 0; l < m.params.layers.size(); ++l) {
    const MoEParams& moe = m.params.layers[l].moe;
    if (!moe.routes_by_token() || !keep(tid2eid_name(l))) continue;
    tables.emplace_back(moe.tid2eid.begin(), moe.tid2eid.end());
    w.add_i64(tid2eid_name(l), {m.config.vocab_size, m.config.num_experts_per_tok}, tables.back().data());
  }
  w.set_metadata("format", "pt");
  w.set_metadata("producer", "memoe");
  w.write(file);
}

void save_model(const Model& m, const std::string& dir, DType dtype) {
  make_dir(dir);
  save_model_tensors(m, dir + "/model.safetensors", [](const std::string&) { return true; }, dtype);
  write_file_atomic(dir + "/config.json", config_to_json(m.config));
}

std::string resolve_model_dir(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  // A run's checkpoints/latest: a symlink (followed by is_directory), or in
  // runs from before that a file holding the checkpoint's name.
  if (fs::is_regular_file(path, ec) && fs::path(path).filename() == "latest" && fs::file_size(path, ec) < 256) {
    std::ifstream in(path);
    std::string name;
    if (in >> name && name.find('/') == std::string::npos) {
      const fs::path dir = fs::path(path).parent_path() / name;
      if (fs::is_directory(dir, ec)) return dir.string();
    }
  }
  return path;
}

const char* table_storage_name(TableStorage s) { return s == TableStorage::resident ? "resident" : "mmap"; }

TableStorage parse_table_storage(const std::string& name) {
  if (name == "mmap") return TableStorage::mapped;
  if (name == "resident") return TableStorage::resident;
  fail("unknown Engram table storage '", name, "' (expected mmap or resident)");
}

namespace {
// A copy of a view's values in memory of its own, viewed the same way: the
// resident form of a mapped tensor (same dtype, same kernels).
// The copy goes 64 MiB at a time, each source chunk's pages released from
// this process once copied, so a table is never in memory twice.
template <class T>
Tensor owned_copy_of(const std::vector<int64_t>& shape, const T* values, size_t n,
                     Tensor (*view)(std::vector<int64_t>, const T*, std::shared_ptr<const void>)) {
  auto copy = std::make_shared<std::vector<T, ZeroedAllocator<T>>>(n);
  constexpr size_t kChunk = (64u << 20) / sizeof(T);
  for (size_t i = 0; i < n; i += kChunk) {
    const size_t count = std::min(kChunk, n - i);
    std::copy(values + i, values + i + count, copy->data() + i);
    release_pages({values + i, count * sizeof(T)});
  }
  return view(shape, copy->data(), copy);
}

Tensor resident(const Tensor& mapped) {
  const size_t n = size_t(mapped.numel());
  if (mapped.has_f32()) return owned_copy_of(mapped.shape(), mapped.data(), n, &Tensor::view_f32);
  return owned_copy_of(mapped.shape(), mapped.bf16(), n, &Tensor::view_bf16);
}
}  // namespace

Model load_model(const std::string& path, const LoadOptions& options) {
  const std::string dir = resolve_model_dir(path);
  MEMOE_CHECK(std::filesystem::is_directory(dir), "model directory ", dir, " does not exist");
  Model m;
  m.config = load_config(dir + "/config.json");
  require_engine_support(m.config);
  const ModelConfig& cfg = m.config;
  // model.safetensors, or the sharded form a data-parallel run writes.
  const SafetensorsSet f = SafetensorsSet::open(dir, "model");

  if (f.has(kTokenMap)) {
    m.token_map = read_i64_shaped(f, kTokenMap, cfg.vocab_size);
    for (size_t i = 0; i < m.token_map.size(); ++i)
      MEMOE_CHECK(m.token_map[i] >= 0 && m.token_map[i] < cfg.vocab_size, f.path(), ": ", kTokenMap, "[", i,
                  "] = ", m.token_map[i], " is outside 0..vocab_size-1");
  } else {
    MEMOE_CHECK(!cfg.engram, f.path(), ": missing tensor ", kTokenMap, " (required with Engram)");
    m.token_map.resize(size_t(cfg.vocab_size));
    for (size_t i = 0; i < m.token_map.size(); ++i) m.token_map[i] = int64_t(i);
  }

  m.engram_hash.resize(size_t(cfg.num_hidden_layers));
  if (cfg.engram) {
    const EngramConfig& e = *cfg.engram;
    // The hash is a function of the config and the token map (spec §5.2):
    // the stored one must be it, so that a corrupt file can neither change
    // the addressing nor ask for tables of arbitrary size.
    const std::vector<EngramHash> expected = make_engram_hashes(cfg, m.token_map);
    for (int l : e.layer_ids) {
      EngramHash& h = m.engram_hash[size_t(l)];
      const std::string prefix = engram_prefix(size_t(l));
      h.multipliers = read_i64_shaped(f, prefix + "hash_multipliers", e.max_ngram_size);
      h.primes = read_i64_shaped(f, prefix + "table_sizes", e.tables_per_layer());
      MEMOE_CHECK(h.multipliers == expected[size_t(l)].multipliers, f.path(), ": ", prefix,
                  "hash_multipliers are not the ones its config and token map give");
      MEMOE_CHECK(h.primes == expected[size_t(l)].primes, f.path(), ": ", prefix,
                  "table_sizes are not the primes its config gives");
      h.compressed_pad = m.token_map[size_t(e.pad_id)];
    }
  }

  // A small file with an absurd config is refused before anything is
  // allocated, not after gigabytes of zeroed tensors. Files near the right
  // size go on to the per-tensor checks below, which name the tensor.
  double stored = 0;
  for (const std::string& name : f.names()) {
    double n = 1;
    for (int64_t extent : f.info(name).shape) n *= double(extent);
    stored += n;
  }
  const double wanted = double(count_params(cfg, 1).total);
  MEMOE_CHECK(wanted <= 2 * stored + double(1 << 20), f.path(), ": holds ", int64_t(stored),
              " values, far fewer than the ", int64_t(wanted), " parameters its config needs");
  // allocate() touches no memory (core/tensor.h), so the tensors replaced
  // by views below never cost any.
  m.params.allocate(cfg, m.engram_rows(), false);
  const bool mapped = options.weights == WeightStorage::mapped;
  m.params.visit([&](const std::string& name, Tensor& t, const ParamRole& role) {
    if (!f.has(name) && role.update == ParamUpdate::SparseRows) {
      // A sharded-table run stores each rank's rows as a piece.
      f.read_range(name, t.numel(), 0, t.numel(), t.data());
      return;
    }
    MEMOE_CHECK(f.has(name), f.path(), ": missing tensor ", name);
    const TensorInfo& info = f.info(name);
    MEMOE_CHECK(info.shape == t.shape(), f.path(), ": tensor ", name, " has shape ", shape_string(info.shape),
                ", expected ", shape_string(t.shape()));
    // F16, F64 or misaligned values are converted as in the copied form.
    if (mapped && (role.bf16_copy || role.gathered) && f.viewable(name)) {
      t = f.view(name);
      if (role.update == ParamUpdate::SparseRows) {
        if (options.engram_tables == TableStorage::resident)
          t = resident(t);
        else
          advise_random_access({f.raw_bytes(name).data(), f.raw_bytes(name).size()});
      }
      return;
    }
    f.read_f32_into(name, t.data(), t.numel());
  });
  for (size_t l = 0; l < m.params.layers.size(); ++l) {
    MoEParams& moe = m.params.layers[l].moe;
    if (!moe.routes_by_token()) continue;
    const std::string name = tid2eid_name(l);
    MEMOE_CHECK(f.has(name), f.path(), ": missing tensor ", name);
    const std::vector<int64_t> shape = {cfg.vocab_size, cfg.num_experts_per_tok};
    MEMOE_CHECK(f.info(name).shape == shape, f.path(), ": tensor ", name, " has shape ",
                shape_string(f.info(name).shape), ", expected ", shape_string(shape));
    const std::vector<int64_t> table = f.read_i64(name);
    for (size_t i = 0; i < table.size(); ++i)
      MEMOE_CHECK(table[i] >= 0 && table[i] < cfg.n_routed_experts, f.path(), ": ", name, " routes token ",
                  int64_t(i) / cfg.num_experts_per_tok, " to expert ", table[i], ", outside 0..",
                  cfg.n_routed_experts - 1);
    moe.tid2eid.assign(table.begin(), table.end());
    try {
      check_token_routing(moe.tid2eid.data(), cfg.vocab_size, cfg.num_experts_per_tok, cfg.n_routed_experts);
    } catch (const Error& e) {
      fail(f.path(), ": ", name, ": ", e.what());
    }
  }
  if (mapped && cfg.engram && options.engram_tables == TableStorage::mapped &&
      options.engram_prefetch != PrefetchMethod::off)
    m.engram_prefetcher = std::make_shared<PagePrefetcher>(options.engram_prefetch);
  return m;
}

}  // namespace memoe
