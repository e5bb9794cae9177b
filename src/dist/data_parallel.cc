#include "dist/data_parallel.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "kernels/elementwise.h"
#include "kernels/engram_hash.h"

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

GradientSum::GradientSum(Communicator& comm, ModelParams& out) : comm_(comm), out_(out) {
  if (comm_.size() == 1) return;
  for (Tensor* t : dense_tensors(out_)) total_ += t->numel();
  const int64_t mine = comm_.shard_begin(total_, comm_.rank() + 1) - comm_.shard_begin(total_, comm_.rank());
  flat_.resize(size_t(total_));
  received_.resize(size_t(mine * comm_.size()));
  shard_.resize(size_t(mine));
  tables_.resize(sparse_grads(out_).size());
}

void GradientSum::begin_step() {
  first_ = true;
  std::fill(shard_.begin(), shard_.end(), 0.0f);
  for (SparseRowGrad& t : tables_) t = SparseRowGrad{};
}

namespace {
// One rank's table gradient merged into a running sum.
void merge_into(SparseRowGrad& sum, const SparseRowGrad& g) {
  merge_rows(sum, g.rows.data(), int64_t(g.rows.size()), g.grad.data(), g.row_width);
}
}  // namespace

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
  size_t at = 0;
  for (Tensor* t : dense) {
    std::memcpy(flat_.data() + at, t->data(), size_t(t->numel()) * sizeof(float));
    at += size_t(t->numel());
  }
  MEMOE_CHECK(int64_t(at) == total_, "gradient sum: a micro-batch's gradients hold ", at, " values, the sum ", total_);
  comm_.scatter_shards(flat_.data(), total_, received_.data());
  const size_t len = shard_.size();
  for (int r = 0; r < comm_.size(); ++r) {
    const float* part = received_.data() + size_t(r) * len;
    for (size_t i = 0; i < len; ++i) shard_[i] += part[i];
  }
  MEMOE_CHECK(sparse.size() == tables_.size(), "gradient sum: ", sparse.size(), " table gradients, expected ",
              tables_.size());
  for (size_t t = 0; t < sparse.size(); ++t) {
    const SparseRowGrad& mine = *sparse[t];
    const std::vector<int64_t> counts =
        comm_.all_gather(std::vector<int64_t>{int64_t(mine.rows.size()), mine.row_width});
    const std::vector<int64_t> rows = comm_.all_gather(mine.rows);
    const std::vector<float> values = comm_.all_gather(mine.grad);
    size_t row_at = 0, value_at = 0;
    for (int r = 0; r < comm_.size(); ++r) {
      const int64_t count = counts[size_t(2 * r)], width = counts[size_t(2 * r + 1)];
      merge_rows(tables_[t], rows.data() + row_at, count, values.data() + value_at, width);
      row_at += size_t(count);
      value_at += size_t(count * width);
    }
  }
}

void GradientSum::finish(float scale) {
  if (comm_.size() > 1) {
    comm_.gather_shards(shard_.data(), total_, flat_.data());
    size_t at = 0;
    for (Tensor* t : dense_tensors(out_)) {
      std::memcpy(t->data(), flat_.data() + at, size_t(t->numel()) * sizeof(float));
      at += size_t(t->numel());
    }
    const std::vector<SparseRowGrad*> tables = sparse_grads(out_);
    for (size_t t = 0; t < tables.size(); ++t) *tables[t] = tables_[t];
  }
  if (scale == 1.0f) return;
  for (Tensor* t : dense_tensors(out_)) scale_in_place(t->data(), t->numel(), scale);
  for (SparseRowGrad* g : sparse_grads(out_)) scale_in_place(g->grad.data(), int64_t(g->grad.size()), scale);
}

void broadcast_parameters(Communicator& comm, ModelParams& params) {
  if (comm.size() == 1) return;
  for (Tensor* t : dense_tensors(params)) {
    MEMOE_CHECK(t->has_f32() && !t->is_view(), "broadcast_parameters: a parameter is not an owned fp32 tensor");
    comm.broadcast(t->data(), t->numel());
  }
}

}  // namespace memoe
