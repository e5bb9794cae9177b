#include "parallel/engram_shard.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <exception>

#include "core/error.h"
#include "kernels/embedding.h"

namespace memoe {

// One layer's fetch in flight: the rows asked for and those being sent.
struct ShardedEngramTables::Fetch {
  std::vector<int64_t> wanted;   // unique global rows, ascending
  Tensor table;                  // [wanted, D]: their values, once arrived
  std::vector<float> outgoing;   // the rows this rank serves (alive until sent)
  std::unique_ptr<Communicator::Pending> pending;
  bool started = false;
};

ShardedEngramTables::ShardedEngramTables(Communicator& world, const Model& model) : world_(world) {
  MEMOE_CHECK(model.config.engram, "--engram-shard: the model has no Engram layer");
  fetches_.resize(model.params.layers.size());
  for (auto& f : fetches_) f = std::make_unique<Fetch>();
}

ShardedEngramTables::~ShardedEngramTables() {
  // Unwinding towards abort_all with a fetch in flight: MPI may still write
  // into its buffers (as GradientSum leaks its buckets then).
  if (std::uncaught_exceptions() > 0)
    for (auto& f : fetches_)
      if (f->started) (void)f.release();
}

void ShardedEngramTables::keep_owned_rows(ModelParams& params) const {
  for (LayerParams& l : params.layers) {
    if (!l.has_engram) continue;
    Tensor& t = l.engram.embedding;
    const int64_t rows = t.dim(0), D = t.dim(1);
    const int64_t begin = first_row(rows, world_.rank()), end = first_row(rows, world_.rank() + 1);
    Tensor owned(t.shape());
    owned.advise_huge_pages();  // as EngramParams::allocate does; only the owned rows are ever touched
    std::memcpy(owned.data() + begin * D, t.data() + begin * D, size_t((end - begin) * D) * sizeof(float));
    t = std::move(owned);
  }
}

void ShardedEngramTables::start(int layer, const EngramParams& p, std::vector<int64_t> wanted) {
  Fetch& f = *fetches_.at(size_t(layer));
  MEMOE_CHECK(!f.started, "sharded Engram: layer ", layer, "'s rows were asked for twice");
  const int R = world_.size();
  const int64_t rows = p.embedding.dim(0), D = p.embedding.dim(1);
  f.wanted = std::move(wanted);
  // The owners' ranges are ascending, so each owner's rows are one run of
  // the sorted list.
  std::vector<int64_t> want(size_t(R), 0);
  for (int q = 0, i = 0; q < R; ++q) {
    const int64_t end = first_row(rows, q + 1);
    while (size_t(i) < f.wanted.size() && f.wanted[size_t(i)] < end) ++want[size_t(q)], ++i;
  }
  const std::vector<int64_t> serve = world_.exchange_counts(want);
  int64_t served = 0;
  for (int64_t c : serve) served += c;
  std::vector<int64_t> asked(static_cast<size_t>(served));
  world_.exchange(f.wanted.data(), want, asked.data(), serve);
  const int64_t begin = first_row(rows, world_.rank()), end = first_row(rows, world_.rank() + 1);
  f.outgoing.resize(size_t(served * D));
  for (int64_t i = 0; i < served; ++i) {
    const int64_t r = asked[size_t(i)];
    MEMOE_CHECK(r >= begin && r < end, "sharded Engram: rank ", world_.rank(), " was asked for row ", r,
                " outside its rows ", begin, "..", end - 1);
    std::memcpy(f.outgoing.data() + i * D, p.embedding.data() + r * D, size_t(D) * sizeof(float));
  }
  for (int q = 0; q < R; ++q)
    if (q != world_.rank()) sent_bytes_ += serve[size_t(q)] * D * int64_t(sizeof(float));
  f.table.resize({int64_t(f.wanted.size()), D});
  std::vector<int64_t> send_values(serve), recv_values(want);
  for (int64_t& c : send_values) c *= D;
  for (int64_t& c : recv_values) c *= D;
  f.pending = world_.start_exchange(f.outgoing.data(), send_values, f.table.data(), recv_values);
  f.started = true;
}

namespace {
std::vector<int64_t> unique_sorted(std::vector<int64_t> rows) {
  std::sort(rows.begin(), rows.end());
  rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
  return rows;
}
}  // namespace

void ShardedEngramTables::prefetch(const Model& model, const int64_t* ids, int64_t batch, int64_t seq_len) {
  std::vector<int64_t> compressed(size_t(batch * seq_len));
  remap_ids(ids, batch * seq_len, model.token_map.empty() ? nullptr : model.token_map.data(), compressed.data());
  for (size_t l = 0; l < model.params.layers.size(); ++l) {
    if (!model.params.layers[l].has_engram) continue;
    start(int(l), model.params.layers[l].engram,
          unique_sorted(engram_rows_of(model.config, model.engram_hash[l], compressed.data(), batch, seq_len)));
  }
}

const Tensor& ShardedEngramTables::fetch(int layer, const EngramParams& p, std::vector<int64_t>& rows,
                                         std::vector<int64_t>& held) {
  Fetch& f = *fetches_.at(size_t(layer));
  std::vector<int64_t> wanted = unique_sorted(rows);
  if (!f.started)
    start(layer, p, wanted);
  else
    MEMOE_CHECK(wanted == f.wanted, "sharded Engram: layer ", layer, " reads other rows than were fetched for it");
  const auto t0 = std::chrono::steady_clock::now();
  f.pending->wait();
  wait_s_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  f.started = false;
  for (int64_t& r : rows) r = std::lower_bound(f.wanted.begin(), f.wanted.end(), r) - f.wanted.begin();
  held = f.wanted;
  return f.table;
}

void ShardedEngramTables::idle_fetch(int layer, const EngramParams& p) {
  std::vector<int64_t> none, held;
  fetch(layer, p, none, held);
}

}  // namespace memoe
