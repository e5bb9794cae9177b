// What Engram's tables cost when they stay on disk: decode tokens/s and
// peak RSS of one model whose tables are at least 2 GiB, with the tables
//   resident      copied into memory at load;
//   mmap-warm     mapped, already in the page cache;
//   cold-off      mapped, evicted from the page cache (POSIX_FADV_DONTNEED
//                 on the tables' bytes) before the run, no read-ahead;
//   cold-madvise  the same, rows read ahead with MADV_WILLNEED;
//   cold-reader   the same, rows read ahead by reader threads.
// Each case runs in a process of its own (so peak RSS is its own), in turn,
// `--rounds` times; the medians are compared with the resident case.
//
//   build/memoe_tables_bench [--config configs/small.json] [--dir build/tables_model]
//                            [--table-rows 1048576] [--prompt 64] [--tokens 256]
//                            [--threads 2] [--rounds 3]
//
// The model is the config (the small preset by default) with tables of
// `--table-rows` rows per n-gram order and head (F32; 1048576 gives the
// small preset 2 GiB over its two Engram layers), written once to --dir with
// random weights. Every decode step
// feeds a random token, so its n-grams (and rows) are new: a cold run stays
// cold. Precision is the CLI's auto.
#include <fcntl.h>
#include <omp.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/process.h"
#include "core/rng.h"
#include "io/safetensors.h"
#include "kernels/linear.h"
#include "model/checkpoint.h"
#include "model/inference.h"
#include "model/init.h"

using namespace memoe;

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

struct Options {
  std::string config = std::string(MEMOE_SOURCE_DIR) + "/configs/small.json";
  std::string dir = "build/tables_model";
  int64_t table_rows = 1048576;
  int prompt = 64, tokens = 256, threads = 2, rounds = 3;
};

const char* const kCases[] = {"resident", "mmap-warm", "cold-off", "cold-madvise", "cold-reader"};

void make_model(const Options& o) {
  ModelConfig cfg = load_config(o.config);
  for (int64_t& s : cfg.engram->table_sizes) s = o.table_rows;
  if (std::filesystem::exists(o.dir + "/model.safetensors")) {
    const ModelConfig have = load_config(o.dir + "/config.json");
    if (have.engram && have.engram->table_sizes == cfg.engram->table_sizes && have.hidden_size == cfg.hidden_size &&
        have.num_hidden_layers == cfg.num_hidden_layers)
      return;
  }
  std::printf("writing the benchmark model to %s ...\n", o.dir.c_str());
  std::fflush(stdout);
  save_model(init_model(cfg, 1), o.dir);
}

// Calls fn(fd, offset, bytes) for each Engram table's bytes in the file.
template <class Fn>
void for_each_table_range(const std::string& path, Fn fn) {
  const SafetensorsFile f = SafetensorsFile::open(path);
  const int fd = ::open(path.c_str(), O_RDONLY);
  uint64_t header = 0;
  if (fd < 0 || ::pread(fd, &header, 8, 0) != 8) throw Error("cannot read " + path);
  for (const std::string& name : f.names())
    if (name.find("engram.embedding") != std::string::npos) {
      const TensorInfo& t = f.info(name);
      fn(fd, 8 + header + t.begin, t.end - t.begin);
    }
  ::close(fd);
}

// Evicts the tables from the page cache.
void evict_tables(const std::string& path) {
  for_each_table_range(path, [](int fd, uint64_t at, uint64_t bytes) {
    ::posix_fadvise(fd, off_t(at), off_t(bytes), POSIX_FADV_DONTNEED);
  });
}

// Reads the tables once with pread: in the page cache, but not in this
// process's memory.
void warm_tables(const std::string& path) {
  std::vector<char> buffer(16 << 20);
  for_each_table_range(path, [&](int fd, uint64_t at, uint64_t bytes) {
    for (uint64_t done = 0; done < bytes; done += buffer.size())
      if (::pread(fd, buffer.data(), std::min<uint64_t>(buffer.size(), bytes - done), off_t(at + done)) < 0)
        throw Error("cannot read the tables");
  });
}

// One case in this process; prints "RESULT case prefill decode rss_mib".
int run_case(const Options& o, const std::string& name) {
  omp_set_num_threads(o.threads);
  const std::string path = o.dir + "/model.safetensors";
  LoadOptions load;
  load.weights = WeightStorage::mapped;
  load.engram_tables = name == "resident" ? TableStorage::resident : TableStorage::mapped;
  load.engram_prefetch = name == "cold-madvise" ? PrefetchMethod::madvise
                         : name == "cold-reader" ? PrefetchMethod::reader
                                                 : PrefetchMethod::off;
  if (name == "mmap-warm") warm_tables(path);
  if (name.rfind("cold", 0) == 0) evict_tables(path);
  Model m = load_model(o.dir, load);
  double fault_us = 0;
  if (name == "cold-off") {
    // What one synchronous row read costs: touch 64 evicted rows in turn.
    const Tensor& table = m.params.layers[size_t(m.config.engram->layer_ids.back())].engram.embedding;
    Rng pick(11);
    volatile float sink = 0;
    const double t0 = now();
    for (int i = 0; i < 64; ++i) sink = sink + table.data()[int64_t(pick.below(uint64_t(table.dim(0)))) * table.dim(1)];
    fault_us = (now() - t0) / 64 * 1e6;
  }
  m.params.set_precision(default_precision());
  const int64_t V = m.config.vocab_size;
  Rng rng(7);
  std::vector<int64_t> ids(static_cast<size_t>(o.prompt + o.tokens));
  for (int64_t& id : ids) id = int64_t(rng.below(uint64_t(V)));
  SequenceState s = new_sequence(m);
  Tensor logits;
  double t0 = now();
  feed_tokens(m, s, ids.data(), o.prompt, 256, Logits::Last, logits);
  const double prefill = o.prompt / (now() - t0);
  t0 = now();
  for (int t = 0; t < o.tokens; ++t) decode_step(m, {&s}, &ids[size_t(o.prompt + t)], logits);
  const double decode = o.tokens / (now() - t0);
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  std::printf("RESULT %s %.1f %.1f %.1f %.1f\n", name.c_str(), prefill, decode, double(u.ru_maxrss) / 1024.0, fault_us);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  restart_with_defaults(argv, kernel_environment_defaults());
  Options o;
  std::string child;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--dir") o.dir = next();
    else if (a == "--config") o.config = next();
    else if (a == "--table-rows") o.table_rows = std::atoll(next().c_str());
    else if (a == "--prompt") o.prompt = std::atoi(next().c_str());
    else if (a == "--tokens") o.tokens = std::atoi(next().c_str());
    else if (a == "--threads") o.threads = std::atoi(next().c_str());
    else if (a == "--rounds") o.rounds = std::atoi(next().c_str());
    else if (a == "--child") child = next();
    else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      return 2;
    }
  }
  if (o.prompt < 1 || o.tokens < 1 || o.threads < 1 || o.rounds < 1 || o.table_rows < 1000) {
    std::fprintf(stderr, "--prompt, --tokens, --threads, --rounds must be >= 1 and --table-rows >= 1000\n");
    return 2;
  }
  try {
    if (!child.empty()) return run_case(o, child);
    make_model(o);
    const double table_gib = double(std::filesystem::file_size(o.dir + "/model.safetensors")) / double(1 << 30);
    std::printf("model %s: %.2f GiB file, prompt %d, %d decode steps, %d threads, %s\n", o.dir.c_str(), table_gib,
                o.prompt, o.tokens, o.threads, precision_line(default_precision()).c_str());
    std::map<std::string, std::vector<double>> prefill, decode, rss, fault;
    for (int r = 0; r < o.rounds; ++r)
      for (const char* c : kCases) {
        std::string cmd = std::filesystem::read_symlink("/proc/self/exe").string();
        cmd = "'" + cmd;
        cmd += "' --child ";
        cmd += c;
        cmd += " --dir '" + o.dir + "' --table-rows " + std::to_string(o.table_rows);
        cmd += " --prompt " + std::to_string(o.prompt) + " --tokens " + std::to_string(o.tokens);
        cmd += " --threads " + std::to_string(o.threads);
        FILE* p = popen(cmd.c_str(), "r");
        char line[512];
        bool got = false;
        while (p && std::fgets(line, sizeof line, p)) {
          char name[64];
          double pf, dc, mib, us;
          if (std::sscanf(line, "RESULT %63s %lf %lf %lf %lf", name, &pf, &dc, &mib, &us) == 5) {
            prefill[c].push_back(pf);
            decode[c].push_back(dc);
            rss[c].push_back(mib);
            if (us > 0) fault[c].push_back(us);
            std::printf("round %d %-13s prefill %7.0f tokens/s  decode %6.1f tokens/s  peak RSS %7.0f MiB\n", r + 1,
                        c, pf, dc, mib);
            got = true;
          }
        }
        if (!p || pclose(p) != 0 || !got) throw Error(std::string("case ") + c + " failed");
      }
    const double base = median(decode["resident"]);
    std::printf("\nmedians over %d rounds (decode relative to resident tables):\n", o.rounds);
    for (const char* c : kCases)
      std::printf("  %-13s decode %6.1f tokens/s (%5.1f %%)  prefill %7.0f tokens/s  peak RSS %7.0f MiB\n", c,
                  median(decode[c]), 100.0 * median(decode[c]) / base, median(prefill[c]), median(rss[c]));
    std::printf("one cold row read (a page fault on an evicted table page): %.0f us; a resident decode step: %.0f us\n",
                median(fault["cold-off"]), 1e6 / base);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "memoe_tables_bench: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
