#include "dist/communicator.h"

// The C API only: not the deprecated C++ bindings mpi.h would pull in.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>

#include "core/error.h"

namespace memoe {

namespace {

bool launched_by_mpirun() {
  return std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr || std::getenv("PMIX_RANK") != nullptr ||
         std::getenv("PMI_RANK") != nullptr;
}

// MPI counts are int: larger buffers go in pieces.
constexpr int64_t kPiece = int64_t(1) << 30;

template <class T>
MPI_Datatype type_of();
template <>
MPI_Datatype type_of<float>() {
  return MPI_FLOAT;
}
template <>
MPI_Datatype type_of<double>() {
  return MPI_DOUBLE;
}
template <>
MPI_Datatype type_of<int64_t>() {
  return MPI_INT64_T;
}

// Counts and offsets of the shards of n values, as MPI's ints.
struct ShardCounts {
  std::vector<int> counts, offsets;
};
ShardCounts shard_counts(const Communicator& comm, int64_t n) {
  MEMOE_CHECK(n < INT_MAX, "a flat buffer of ", n, " values is more than one exchange carries");
  ShardCounts s;
  for (int r = 0; r < comm.size(); ++r) {
    s.offsets.push_back(int(comm.shard_begin(n, r)));
    s.counts.push_back(int(comm.shard_begin(n, r + 1) - comm.shard_begin(n, r)));
  }
  return s;
}


template <class T>
void sum_in_place(T* x, int64_t n) {
  for (int64_t at = 0; at < n; at += kPiece)
    MPI_Allreduce(MPI_IN_PLACE, x + at, int(std::min(kPiece, n - at)), type_of<T>(), MPI_SUM, MPI_COMM_WORLD);
}

template <class T>
void broadcast_from_root(T* x, int64_t n) {
  for (int64_t at = 0; at < n; at += kPiece)
    MPI_Bcast(x + at, int(std::min(kPiece, n - at)), type_of<T>(), 0, MPI_COMM_WORLD);
}

template <class T>
std::vector<T> gather_all(const std::vector<T>& mine, int size) {
  MEMOE_CHECK(mine.size() < size_t(INT_MAX), "all_gather: ", mine.size(), " values are more than one call carries");
  const int count = int(mine.size());
  std::vector<int> counts(static_cast<size_t>(size)), offsets(static_cast<size_t>(size));
  MPI_Allgather(&count, 1, MPI_INT, counts.data(), 1, MPI_INT, MPI_COMM_WORLD);
  int64_t total = 0;
  for (int r = 0; r < size; ++r) {
    MEMOE_CHECK(total + counts[size_t(r)] < INT_MAX, "all_gather: more values than one call carries");
    offsets[size_t(r)] = int(total);
    total += counts[size_t(r)];
  }
  std::vector<T> all(static_cast<size_t>(total));
  MPI_Allgatherv(mine.data(), count, type_of<T>(), all.data(), counts.data(), offsets.data(), type_of<T>(),
                 MPI_COMM_WORLD);
  return all;
}

}  // namespace

std::unique_ptr<Communicator> Communicator::from_environment() {
  if (!launched_by_mpirun()) return single();
  int provided = 0;
  // Collectives are called from one thread (the training loop's); OpenMP
  // threads never call MPI.
  MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return std::unique_ptr<Communicator>(new Communicator(true, rank, size));
}

std::unique_ptr<Communicator> Communicator::single() {
  return std::unique_ptr<Communicator>(new Communicator(false, 0, 1));
}

Communicator::~Communicator() {
  if (mpi_) MPI_Finalize();
}

void Communicator::sum(double* x, int64_t n) {
  if (mpi_ && size_ > 1) sum_in_place(x, n);
}
void Communicator::sum(int64_t* x, int64_t n) {
  if (mpi_ && size_ > 1) sum_in_place(x, n);
}
void Communicator::broadcast(float* x, int64_t n) {
  if (mpi_ && size_ > 1) broadcast_from_root(x, n);
}
void Communicator::broadcast(int64_t* x, int64_t n) {
  if (mpi_ && size_ > 1) broadcast_from_root(x, n);
}
std::vector<int64_t> Communicator::all_gather(const std::vector<int64_t>& mine) {
  return mpi_ && size_ > 1 ? gather_all(mine, size_) : mine;
}
std::vector<float> Communicator::all_gather(const std::vector<float>& mine) {
  return mpi_ && size_ > 1 ? gather_all(mine, size_) : mine;
}
std::vector<double> Communicator::all_gather(const std::vector<double>& mine) {
  return mpi_ && size_ > 1 ? gather_all(mine, size_) : mine;
}

void Communicator::scatter_shards(const float* flat, int64_t n, float* received) {
  const int64_t mine = shard_begin(n, rank_ + 1) - shard_begin(n, rank_);
  if (!mpi_ || size_ == 1) {
    std::copy(flat, flat + n, received);
    return;
  }
  const ShardCounts send = shard_counts(*this, n);
  // From every rank, this rank's shard: equal counts, packed in rank order.
  std::vector<int> counts(static_cast<size_t>(size_), int(mine)), offsets(static_cast<size_t>(size_));
  for (int r = 0; r < size_; ++r) offsets[size_t(r)] = int(mine * r);
  MEMOE_CHECK(mine * size_ < INT_MAX, "a shard of ", mine, " values is more than one exchange carries");
  MPI_Alltoallv(flat, send.counts.data(), send.offsets.data(), MPI_FLOAT, received, counts.data(), offsets.data(),
                MPI_FLOAT, MPI_COMM_WORLD);
}

void Communicator::gather_shards(const float* mine, int64_t n, float* flat) {
  if (!mpi_ || size_ == 1) {
    std::copy(mine, mine + n, flat);
    return;
  }
  const ShardCounts all = shard_counts(*this, n);
  MPI_Allgatherv(mine, all.counts[size_t(rank_)], MPI_FLOAT, flat, all.counts.data(), all.offsets.data(), MPI_FLOAT,
                 MPI_COMM_WORLD);
}
void Communicator::abort_all(const std::string& message, int code) {
  if (mpi_ && size_ > 1) {
    std::fprintf(stderr, "memoe: error on rank %d of %d: %s\n", rank_, size_, message.c_str());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, code);
  }
  std::fprintf(stderr, "memoe: error: %s\n", message.c_str());
  std::exit(code);
}

void Communicator::barrier() {
  if (mpi_ && size_ > 1) MPI_Barrier(MPI_COMM_WORLD);
}

}  // namespace memoe
