#include "parallel/data_parallel.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <exception>

#include "core/error.h"
#include "kernels/elementwise.h"
#include "kernels/engram_hash.h"
#include "kernels/reduce.h"

namespace memoe {

namespace {

std::vector<Tensor*> dense_tensors(ModelParams& p) {
  std::vector<Tensor*> out;
  p.visit([&](const std::string&, Tensor& t) { out.push_back(&t); });
  return out;
}

std::vector<SparseRowGrad*> sparse_grads(ModelParams& p) {
  std::vector<SparseRowGrad*> out;
  p.visit_sparse_grads([&](const std::string&, SparseRowGrad& g) { out.push_back(&g); });
  return out;
}

// sum += the rows of one rank's gradient (rows ascending in both): a merge
// by row id, rows present in both added, values of new rows copied.
void merge_rows(SparseRowGrad& sum, const int64_t* rows, int64_t count, const float* values, int64_t width) {
  if (count == 0) {
    if (sum.rows.empty() && width > 0) sum.row_width = width;
    return;
  }
  MEMOE_CHECK(sum.rows.empty() || sum.row_width == width, "sparse gradient rows have width ", width, ", the sum ",
              sum.row_width);
  SparseRowGrad merged;
  merged.row_width = width;
  merged.rows.reserve(sum.rows.size() + size_t(count));
  merged.grad.reserve((sum.rows.size() + size_t(count)) * size_t(width));
  size_t a = 0;
  int64_t b = 0;
  while (a < sum.rows.size() || b < count) {
    const bool take_a = b == count || (a < sum.rows.size() && sum.rows[a] <= rows[b]);
    const bool take_b = a == sum.rows.size() || (b < count && rows[b] <= sum.rows[a]);
    const int64_t row = take_a ? sum.rows[a] : rows[b];
    const size_t at = merged.grad.size();
    merged.rows.push_back(row);
    if (take_a)
      merged.grad.insert(merged.grad.end(), sum.grad.begin() + long(a * size_t(width)),
                         sum.grad.begin() + long((a + 1) * size_t(width)));
    else
      merged.grad.resize(at + size_t(width), 0.0f);
    if (take_b)
      for (int64_t c = 0; c < width; ++c) merged.grad[at + size_t(c)] += values[size_t(b * width + c)];
    a += take_a ? 1 : 0;
    b += take_b ? 1 : 0;
  }
  sum = std::move(merged);
}

}  // namespace

// One run of whole tensors (by their index in the visit order) sent as one.
struct GradientSum::Bucket {
  struct Member {
    size_t tensor;   // index among the dense tensors in visit order
    int64_t offset;  // in the bucket
    int64_t numel;
  };
  std::vector<Member> members;  // in visit order
  int64_t values = 0;
  int ready_part = 0;           // sendable once the backward pass has finished this part
  Communicator::Cuts cuts;      // rank r's shard: [cuts[r], cuts[r + 1])
  std::vector<float> flat, received, shard;
  std::unique_ptr<Communicator::Pending> pending;
  bool started = false;

  int64_t mine_begin(int rank) const { return cuts[size_t(rank)]; }
  int64_t mine_end(int rank) const { return cuts[size_t(rank) + 1]; }
};

namespace {

// The backward part that finishes a tensor's gradient (model.h's
// GradientReadyHook): its layer, the head (layers) or the embedding (-1).
int backward_part(const std::string& name, int layers) {
  if (const int layer = layer_of_param(name); layer >= 0) return layer;
  if (is_embedding_param(name)) return -1;
  return layers;
}

}  // namespace

GradientSum::GradientSum(Communicator& comm, const Model& model, ModelParams& out, DataParallelOptions options)
    : comm_(comm), model_(model), out_(out), options_(options) {
  if (comm_.size() == 1) return;
  MEMOE_CHECK(options_.bucket_values >= 1, "gradient buckets must hold at least one value");
  std::vector<std::pair<std::string, int64_t>> dense;
  out_.visit([&](const std::string& name, Tensor& t) { dense.emplace_back(name, t.numel()); });
  const int layers = int(out_.layers.size()), R = comm_.size();
  // Buckets in backward order: from the last tensor back.
  std::vector<size_t> run;
  int64_t run_values = 0;
  auto close = [&] {
    if (run.empty()) return;
    auto b = std::make_unique<Bucket>();
    std::reverse(run.begin(), run.end());
    b->ready_part = layers;
    for (size_t i : run) {
      b->members.push_back({i, b->values, dense[i].second});
      b->values += dense[i].second;
      b->ready_part = std::min(b->ready_part, backward_part(dense[i].first, layers));
    }
    MEMOE_CHECK(b->values < (int64_t(1) << 31), "a gradient bucket of ", b->values,
                " values is more than one exchange carries");
    // Shard cuts as even as they can be, at the start of a member or at a
    // multiple of kReduceChunk inside one, so that each rank's share of a
    // tensor is whole chunks of sum_squares and the sharded norm adds the
    // same partials in the same order as the unsharded one.
    std::vector<int64_t> allowed;
    for (const Bucket::Member& m : b->members)
      for (int64_t at = 0; at < m.numel; at += kReduceChunk) allowed.push_back(m.offset + at);
    allowed.push_back(b->values);
    b->cuts.push_back(0);
    for (int r = 1; r < R; ++r) {
      const int64_t target = b->values * r / R;
      auto it = std::lower_bound(allowed.begin(), allowed.end(), target);
      int64_t cut = it == allowed.end() ? b->values : *it;
      if (it != allowed.begin() && target - *(it - 1) < cut - target) cut = *(it - 1);
      b->cuts.push_back(std::max(cut, b->cuts.back()));
    }
    b->cuts.push_back(b->values);
    const int64_t mine = b->mine_end(comm_.rank()) - b->mine_begin(comm_.rank());
    b->flat.resize(size_t(b->values));
    b->received.resize(size_t(mine * R));
    b->shard.resize(size_t(mine));
    buckets_.push_back(std::move(b));
    run.clear();
    run_values = 0;
  };
  for (size_t i = dense.size(); i-- > 0;) {
    if (options_.experts_apart && routed_expert_of(dense[i].first) >= 0) continue;
    run.push_back(i);
    run_values += dense[i].second;
    if (run_values >= options_.bucket_values) close();
  }
  close();
  tables_.resize(sparse_grads(out_).size());
}

GradientSum::~GradientSum() {
  // Unwinding towards abort_all with exchanges in flight: MPI may still write
  // into their buffers, so they are leaked, not freed (Pending::~Pending).
  if (std::uncaught_exceptions() > 0)
    for (auto& b : buckets_)
      if (b->started) (void)b.release();
}

std::vector<ParamSlice> GradientSum::owned_slices() const {
  std::vector<ParamSlice> out;
  const bool sharded = options_.zero && comm_.size() > 1;
  // Where each dense tensor lies: (bucket, member).
  std::vector<std::pair<const Bucket*, const Bucket::Member*>> where;
  for (const auto& b : buckets_)
    for (const Bucket::Member& m : b->members) {
      if (where.size() <= m.tensor) where.resize(m.tensor + 1);
      where[m.tensor] = {b.get(), &m};
    }
  size_t dense_index = 0;
  const int me = comm_.rank();
  const_cast<ModelParams&>(model_.params).visit([&](const std::string& name, Tensor& t, const ParamRole& role) {
    if (role.update == ParamUpdate::SparseRows && (sharded || options_.tables_sharded)) {
      // The table's rows, split evenly.
      const int64_t rows = t.dim(0), width = t.numel() / std::max<int64_t>(rows, 1);
      const int64_t begin = comm_.shard_begin(rows, me), end = comm_.shard_begin(rows, me + 1);
      if (end > begin) out.push_back({name, begin * width, end * width});
      return;
    }
    if (!sharded) {
      out.push_back({name, 0, t.numel()});
      if (role.update != ParamUpdate::SparseRows) ++dense_index;
      return;
    }
    if (options_.experts_apart && routed_expert_of(name) >= 0) {
      out.push_back({name, 0, t.numel()});  // a held expert: its holder updates it whole
      ++dense_index;
      return;
    }
    const auto [bucket, member] = where.at(dense_index++);
    const int64_t begin = std::max(bucket->mine_begin(me), member->offset);
    const int64_t end = std::min(bucket->mine_end(me), member->offset + member->numel);
    if (end > begin) out.push_back({name, begin - member->offset, end - member->offset});
  });
  return out;
}

void GradientSum::begin_step() {
  first_ = true;
  wait_s_ = 0;
  for (auto& b : buckets_) std::fill(b->shard.begin(), b->shard.end(), 0.0f);
  for (SparseRowGrad& t : tables_) t = SparseRowGrad{};
}

namespace {
// One rank's table gradient merged into a running sum.
void merge_into(SparseRowGrad& sum, const SparseRowGrad& g) {
  merge_rows(sum, g.rows.data(), int64_t(g.rows.size()), g.grad.data(), g.row_width);
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

void GradientSum::start_bucket(const std::vector<Tensor*>& dense, size_t index) {
  Bucket& b = *buckets_[index];
  for (const Bucket::Member& m : b.members)
    std::memcpy(b.flat.data() + m.offset, dense.at(m.tensor)->data(), size_t(m.numel) * sizeof(float));
  b.pending = comm_.start_scatter_shards(b.flat.data(), b.cuts, b.received.data());
  b.started = true;
}

void GradientSum::on_backward_progress(ModelParams& micro, int part) {
  if (comm_.size() == 1 || !options_.overlap) return;
  std::vector<Tensor*> dense;
  for (size_t i = 0; i < buckets_.size(); ++i) {
    Bucket& b = *buckets_[i];
    if (!b.started && b.ready_part >= part) {
      if (dense.empty()) dense = dense_tensors(micro);
      start_bucket(dense, i);
    }
    if (b.started) b.pending->done();  // lets MPI move the bytes along
  }
}

void GradientSum::add(ModelParams& micro) {
  MEMOE_CHECK(&micro != &out_, "gradient sum: a micro-batch's gradients must not be the sum itself");
  const std::vector<Tensor*> dense = dense_tensors(micro);
  const std::vector<SparseRowGrad*> sparse = sparse_grads(micro);
  if (comm_.size() == 1) {
    // The sum in out_ itself: the first micro-batch copied (0 + g is g),
    // the others added, in order.
    const std::vector<Tensor*> sums = dense_tensors(out_);
    MEMOE_CHECK(sums.size() == dense.size(), "gradient sum: ", dense.size(), " tensors, expected ", sums.size());
    for (size_t i = 0; i < dense.size(); ++i) {
      float* dst = sums[i]->data();
      const float* src = dense[i]->data();
      if (first_)
        std::memcpy(dst, src, size_t(dense[i]->numel()) * sizeof(float));
      else
        for (int64_t j = 0; j < dense[i]->numel(); ++j) dst[j] += src[j];
    }
    const std::vector<SparseRowGrad*> tables = sparse_grads(out_);
    for (size_t t = 0; t < sparse.size(); ++t) {
      if (first_) *tables[t] = SparseRowGrad{};
      merge_into(*tables[t], *sparse[t]);
    }
    first_ = false;
    return;
  }
  for (size_t i = 0; i < buckets_.size(); ++i)
    if (!buckets_[i]->started) start_bucket(dense, i);
  const int R = comm_.size();
  for (auto& bp : buckets_) {
    Bucket& b = *bp;
    const auto t0 = std::chrono::steady_clock::now();
    b.pending->wait();
    wait_s_ += seconds_since(t0);
    b.started = false;
    const size_t len = b.shard.size();
    for (int r = 0; r < R; ++r) {
      const float* part = b.received.data() + size_t(r) * len;
      for (size_t i = 0; i < len; ++i) b.shard[i] += part[i];
    }
  }
  MEMOE_CHECK(sparse.size() == tables_.size(), "gradient sum: ", sparse.size(), " table gradients, expected ",
              tables_.size());
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t t = 0; t < sparse.size(); ++t) {
    const SparseRowGrad& mine = *sparse[t];
    const std::vector<int64_t> counts =
        comm_.all_gather(std::vector<int64_t>{int64_t(mine.rows.size()), mine.row_width});
    const std::vector<int64_t> rows = comm_.all_gather(mine.rows);
    const std::vector<float> values = comm_.all_gather(mine.grad);
    size_t row_at = 0, value_at = 0;
    for (int r = 0; r < R; ++r) {
      const int64_t count = counts[size_t(2 * r)], width = counts[size_t(2 * r + 1)];
      merge_rows(tables_[t], rows.data() + row_at, count, values.data() + value_at, width);
      row_at += size_t(count);
      value_at += size_t(count * width);
    }
  }
  wait_s_ += seconds_since(t0);
}

void GradientSum::finish(float scale) {
  if (comm_.size() > 1) {
    const std::vector<Tensor*> dense = dense_tensors(out_);
    const int me = comm_.rank();
    const auto t0 = std::chrono::steady_clock::now();
    for (auto& bp : buckets_) {
      Bucket& b = *bp;
      if (options_.zero) {
        // Only this rank's shard: the optimizer updates nothing else.
        const int64_t begin = b.mine_begin(me), end = b.mine_end(me);
        for (const Bucket::Member& m : b.members) {
          const int64_t from = std::max(begin, m.offset), to = std::min(end, m.offset + m.numel);
          if (to > from)
            std::memcpy(dense[m.tensor]->data() + (from - m.offset), b.shard.data() + (from - begin),
                        size_t(to - from) * sizeof(float));
        }
        continue;
      }
      comm_.gather_shards(b.shard.data(), b.cuts, b.flat.data());
      for (const Bucket::Member& m : b.members)
        std::memcpy(dense[m.tensor]->data(), b.flat.data() + m.offset, size_t(m.numel) * sizeof(float));
    }
    wait_s_ += seconds_since(t0);
    const std::vector<SparseRowGrad*> tables = sparse_grads(out_);
    for (size_t t = 0; t < tables.size(); ++t) *tables[t] = tables_[t];
  }
  if (scale == 1.0f) return;
  for (Tensor* t : dense_tensors(out_)) scale_in_place(t->data(), t->numel(), scale);
  for (SparseRowGrad* g : sparse_grads(out_)) scale_in_place(g->grad.data(), int64_t(g->grad.size()), scale);
}

double GradientSum::sharded_global_norm(GradientNormTerms* terms) {
  MEMOE_CHECK(options_.zero && comm_.size() > 1, "the sharded gradient norm needs ZeRO-1 over several ranks");
  // This rank's chunk partials of sum_squares, each named by (tensor,
  // chunk); every rank then adds all of them in the order
  // gradient_global_norm does: tensors in visit order, chunks in order.
  const std::vector<Tensor*> dense = dense_tensors(out_);
  const int me = comm_.rank();
  std::vector<int64_t> ids;
  std::vector<double> partials;
  std::vector<int64_t> first_chunk(dense.size() + 1, 0);
  for (size_t i = 0; i < dense.size(); ++i)
    first_chunk[i + 1] = first_chunk[i] + (dense[i]->numel() + kReduceChunk - 1) / kReduceChunk;
  for (const auto& bp : buckets_) {
    const Bucket& b = *bp;
    for (const Bucket::Member& m : b.members) {
      const int64_t from = std::max(b.mine_begin(me), m.offset) - m.offset;
      const int64_t to = std::min(b.mine_end(me), m.offset + m.numel) - m.offset;
      for (int64_t at = from; at < to; at += kReduceChunk) {
        ids.push_back(first_chunk[m.tensor] + at / kReduceChunk);
        partials.push_back(sum_squares(dense[m.tensor]->data() + at, std::min(kReduceChunk, m.numel - at)));
      }
    }
  }
  const std::vector<int64_t> all_ids = comm_.all_gather(ids);
  const std::vector<double> all_partials = comm_.all_gather(partials);
  std::vector<double> by_chunk(size_t(first_chunk.back()), 0.0);
  std::vector<char> seen(by_chunk.size(), 0);
  for (size_t i = 0; i < all_ids.size(); ++i) {
    by_chunk.at(size_t(all_ids[i])) = all_partials[i];
    seen[size_t(all_ids[i])] = 1;
  }
  double total = 0.0;
  for (size_t i = 0; i < dense.size(); ++i) {
    double tensor = 0.0;
    for (int64_t c = first_chunk[i]; c < first_chunk[i + 1]; ++c) {
      MEMOE_CHECK(seen[size_t(c)], "sharded gradient norm: no rank holds chunk ", c - first_chunk[i], " of tensor ", i);
      tensor += by_chunk[size_t(c)];
    }
    total += tensor;
    if (terms) terms->dense.push_back(tensor);
  }
  // The table rows are summed on every rank alike: counted here once.
  for (const LayerParams& l : out_.layers) {
    if (!l.has_engram) continue;
    const double x = sum_squares(l.engram.embedding_grad.grad.data(), int64_t(l.engram.embedding_grad.grad.size()));
    total += x;
    if (terms) terms->rows.push_back(x);
  }
  return std::sqrt(total);
}

void GradientSum::gather_parameters(ModelParams& params) {
  if (!options_.zero || comm_.size() == 1) return;
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<Tensor*> dense, tables;
  params.visit([&](const std::string&, Tensor& t, const ParamRole& role) {
    (role.update == ParamUpdate::SparseRows ? tables : dense).push_back(&t);
  });
  const int me = comm_.rank(), R = comm_.size();
  for (auto& bp : buckets_) {
    Bucket& b = *bp;
    const int64_t begin = b.mine_begin(me), end = b.mine_end(me);
    for (const Bucket::Member& m : b.members) {
      const int64_t from = std::max(begin, m.offset), to = std::min(end, m.offset + m.numel);
      if (to > from)
        std::memcpy(b.shard.data() + (from - begin), dense.at(m.tensor)->data() + (from - m.offset),
                    size_t(to - from) * sizeof(float));
    }
    comm_.gather_shards(b.shard.data(), b.cuts, b.flat.data());
    for (const Bucket::Member& m : b.members)
      std::memcpy(dense[m.tensor]->data(), b.flat.data() + m.offset, size_t(m.numel) * sizeof(float));
  }
  // Table rows: the step's rows (the same list on every rank) that each
  // rank's share holds, gathered in rank order. Sharded tables stay with
  // their owners.
  if (options_.tables_sharded) tables.clear();
  MEMOE_CHECK(tables.size() == tables_.size() || options_.tables_sharded, "gather_parameters: ", tables.size(),
              " tables, expected ", tables_.size());
  for (size_t t = 0; t < tables.size(); ++t) {
    Tensor& table = *tables[t];
    const int64_t rows = table.dim(0), width = table.numel() / std::max<int64_t>(rows, 1);
    const std::vector<int64_t>& touched = tables_[t].rows;
    auto owner_range = [&](int r) {
      const int64_t lo = comm_.shard_begin(rows, r), hi = comm_.shard_begin(rows, r + 1);
      return std::pair{std::lower_bound(touched.begin(), touched.end(), lo),
                       std::lower_bound(touched.begin(), touched.end(), hi)};
    };
    std::vector<float> mine;
    const auto [lo, hi] = owner_range(me);
    for (auto it = lo; it != hi; ++it) mine.insert(mine.end(), table.data() + *it * width, table.data() + (*it + 1) * width);
    const std::vector<float> all = comm_.all_gather(mine);
    size_t at = 0;
    for (int r = 0; r < R; ++r) {
      const auto [a, z] = owner_range(r);
      for (auto it = a; it != z; ++it, at += size_t(width))
        std::memcpy(table.data() + *it * width, all.data() + at, size_t(width) * sizeof(float));
    }
  }
  wait_s_ += seconds_since(t0);
}

int64_t GradientSum::buffer_bytes() const {
  int64_t bytes = 0;
  for (const auto& b : buckets_) bytes += int64_t((b->flat.size() + b->received.size() + b->shard.size()) * sizeof(float));
  return bytes;
}

void broadcast_parameters(Communicator& comm, ModelParams& params, bool skip_experts) {
  if (comm.size() == 1) return;
  params.visit([&](const std::string& name, Tensor& t) {
    if (skip_experts && routed_expert_of(name) >= 0) return;
    MEMOE_CHECK(t.has_f32() && !t.is_view(), "broadcast_parameters: a parameter is not an owned fp32 tensor");
    comm.broadcast(t.data(), t.numel());
  });
}

}  // namespace memoe
