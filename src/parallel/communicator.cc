#include "parallel/communicator.h"

// The C API only: not the deprecated C++ bindings mpi.h would pull in.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <exception>

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

// Counts and offsets of shards as MPI's ints.
struct ShardCounts {
  std::vector<int> counts, offsets;
};
ShardCounts shard_counts(const Communicator::Cuts& cuts, int size) {
  MEMOE_CHECK(int(cuts.size()) == size + 1 && cuts.front() == 0, "shard cuts must be ", size + 1,
              " offsets from 0");
  MEMOE_CHECK(cuts.back() < INT_MAX, "a flat buffer of ", cuts.back(), " values is more than one exchange carries");
  ShardCounts s;
  for (int r = 0; r < size; ++r) {
    MEMOE_CHECK(cuts[size_t(r)] <= cuts[size_t(r) + 1], "shard cuts must ascend");
    s.offsets.push_back(int(cuts[size_t(r)]));
    s.counts.push_back(int(cuts[size_t(r) + 1] - cuts[size_t(r)]));
  }
  return s;
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

template <class T>
void sum_in_place(MPI_Comm comm, T* x, int64_t n) {
  for (int64_t at = 0; at < n; at += kPiece)
    MPI_Allreduce(MPI_IN_PLACE, x + at, int(std::min(kPiece, n - at)), type_of<T>(), MPI_SUM, comm);
}

template <class T>
void broadcast_from(MPI_Comm comm, int root, T* x, int64_t n) {
  for (int64_t at = 0; at < n; at += kPiece)
    MPI_Bcast(x + at, int(std::min(kPiece, n - at)), type_of<T>(), root, comm);
}

template <class T>
std::vector<T> gather_all(MPI_Comm comm, const std::vector<T>& mine, int size) {
  MEMOE_CHECK(mine.size() < size_t(INT_MAX), "all_gather: ", mine.size(), " values are more than one call carries");
  const int count = int(mine.size());
  std::vector<int> counts(static_cast<size_t>(size)), offsets(static_cast<size_t>(size));
  MPI_Allgather(&count, 1, MPI_INT, counts.data(), 1, MPI_INT, comm);
  int64_t total = 0;
  for (int r = 0; r < size; ++r) {
    MEMOE_CHECK(total + counts[size_t(r)] < INT_MAX, "all_gather: more values than one call carries");
    offsets[size_t(r)] = int(total);
    total += counts[size_t(r)];
  }
  std::vector<T> all(static_cast<size_t>(total));
  MPI_Allgatherv(mine.data(), count, type_of<T>(), all.data(), counts.data(), offsets.data(), type_of<T>(), comm);
  return all;
}

}  // namespace

// A thread that ends the process when this rank has waited too long in one
// collective. It exits (without MPI_Finalize), and mpirun then ends every
// other rank: a rank that is hung, stopped or dead must not leave the rest
// waiting forever.
struct Communicator::Watchdog {
  std::atomic<double> entered{0};  // when the current collective began; 0: in none
  std::atomic<double> timeout{0};
  std::atomic<bool> stop{false};
  std::mutex mutex;
  std::string activity = "start-up";
  std::thread thread;

  void run(int rank, int size) {
    while (!stop.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      const double since = entered.load(), limit = timeout.load();
      if (since == 0 || limit <= 0 || now_seconds() - since < limit) continue;
      std::string what;
      {
        std::lock_guard<std::mutex> lock(mutex);
        what = activity;
      }
      std::fprintf(stderr,
                   "memoe: error on rank %d of %d: waited %.0f s in a collective during %s; another rank is hung, "
                   "stopped or gone, so the run ends\n",
                   rank, size, limit, what.c_str());
      std::fflush(stderr);
      _exit(1);
    }
  }
};

class Communicator::InCollective {
 public:
  explicit InCollective(Communicator& c) : w_(c.watchdog_.get()) {
    if (w_) w_->entered.store(now_seconds());
  }
  ~InCollective() {
    if (w_) w_->entered.store(0);
  }

 private:
  Watchdog* w_;
};

// The MPI communicator behind a Communicator: MPI_COMM_WORLD, or one split
// from it (freed with its Communicator).
struct Communicator::Handle {
  MPI_Comm comm = MPI_COMM_WORLD;
  bool owned = false;
};

Communicator::Communicator(bool mpi, int rank, int size)
    : mpi_(mpi), rank_(rank), size_(size), world_rank_(rank), handle_(std::make_unique<Handle>()) {
  if (!mpi_ || size_ == 1) return;
  watchdog_ = std::make_shared<Watchdog>();
  watchdog_->thread = std::thread([w = watchdog_.get(), rank, size] { w->run(rank, size); });
}

std::unique_ptr<Communicator> Communicator::split(int color, int key) {
  std::unique_ptr<Communicator> sub(new Communicator(false, 0, 1));
  sub->world_rank_ = world_rank_;
  if (!mpi_ || size_ == 1) return sub;
  InCollective watch(*this);
  MPI_Comm comm;
  MPI_Comm_split(handle_->comm, color, key, &comm);
  sub->mpi_ = true;
  sub->handle_->comm = comm;
  sub->handle_->owned = true;
  MPI_Comm_rank(comm, &sub->rank_);
  MPI_Comm_size(comm, &sub->size_);
  sub->watchdog_ = watchdog_;  // the world's thread watches every group's collectives
  return sub;
}

void Communicator::set_collective_timeout(double seconds) {
  if (watchdog_) watchdog_->timeout.store(seconds);
}

double Communicator::collective_timeout() const { return watchdog_ ? watchdog_->timeout.load() : 0.0; }

void Communicator::set_activity(const std::string& what) {
  if (!watchdog_) return;
  std::lock_guard<std::mutex> lock(watchdog_->mutex);
  watchdog_->activity = what;
}

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
  if (handle_->owned) {
    // A group of the world: freeing it is a collective, so not while an
    // error unwinds towards abort_all (the process ends then anyway).
    if (std::uncaught_exceptions() == 0) MPI_Comm_free(&handle_->comm);
    return;
  }
  if (watchdog_) {
    watchdog_->stop.store(true);
    watchdog_->thread.join();
  }
  if (mpi_) MPI_Finalize();
}

void Communicator::sum(double* x, int64_t n) {
  InCollective watch(*this);
  if (mpi_ && size_ > 1) sum_in_place(handle_->comm, x, n);
}
void Communicator::sum(int64_t* x, int64_t n) {
  InCollective watch(*this);
  if (mpi_ && size_ > 1) sum_in_place(handle_->comm, x, n);
}
void Communicator::broadcast(float* x, int64_t n, int root) {
  InCollective watch(*this);
  if (mpi_ && size_ > 1) broadcast_from(handle_->comm, root, x, n);
}
void Communicator::broadcast(int64_t* x, int64_t n, int root) {
  InCollective watch(*this);
  if (mpi_ && size_ > 1) broadcast_from(handle_->comm, root, x, n);
}
std::vector<int64_t> Communicator::all_gather(const std::vector<int64_t>& mine) {
  InCollective watch(*this);
  return mpi_ && size_ > 1 ? gather_all(handle_->comm, mine, size_) : mine;
}
std::vector<float> Communicator::all_gather(const std::vector<float>& mine) {
  InCollective watch(*this);
  return mpi_ && size_ > 1 ? gather_all(handle_->comm, mine, size_) : mine;
}
std::vector<double> Communicator::all_gather(const std::vector<double>& mine) {
  InCollective watch(*this);
  return mpi_ && size_ > 1 ? gather_all(handle_->comm, mine, size_) : mine;
}

struct Communicator::Pending::State {
  MPI_Request request = MPI_REQUEST_NULL;
  std::vector<int> send_counts, send_offsets, recv_counts, recv_offsets;  // alive until completion
};

Communicator::Pending::Pending(Communicator& comm) : comm_(comm), state_(std::make_unique<State>()) {}

Communicator::Pending::~Pending() {
  // While an exception unwinds, the run is about to end (abort_all): waiting
  // here could wait forever on ranks that never post their part, and would
  // keep the error from being printed. The owner leaks the buffers then.
  if (std::uncaught_exceptions() == 0) wait();
}

void Communicator::Pending::wait() {
  if (state_->request == MPI_REQUEST_NULL) return;
  InCollective watch(comm_);
  MPI_Wait(&state_->request, MPI_STATUS_IGNORE);
}

bool Communicator::Pending::done() {
  if (state_->request == MPI_REQUEST_NULL) return true;
  int flag = 0;
  MPI_Test(&state_->request, &flag, MPI_STATUS_IGNORE);
  return flag != 0;
}

std::unique_ptr<Communicator::Pending> Communicator::start_scatter_shards(const float* flat, const Cuts& cuts,
                                                                         float* received) {
  std::unique_ptr<Pending> p(new Pending(*this));
  if (!mpi_ || size_ == 1) {
    std::copy(flat, flat + cuts.back(), received);
    return p;
  }
  const ShardCounts send = shard_counts(cuts, size_);
  const int mine = send.counts[size_t(rank_)];
  MEMOE_CHECK(int64_t(mine) * size_ < INT_MAX, "a shard of ", mine, " values is more than one exchange carries");
  Pending::State& st = *p->state_;
  st.send_counts = send.counts;
  st.send_offsets = send.offsets;
  // From every rank, this rank's shard: equal counts, packed in rank order.
  st.recv_counts.assign(size_t(size_), mine);
  for (int r = 0; r < size_; ++r) st.recv_offsets.push_back(mine * r);
  MPI_Ialltoallv(flat, st.send_counts.data(), st.send_offsets.data(), MPI_FLOAT, received, st.recv_counts.data(),
                 st.recv_offsets.data(), MPI_FLOAT, handle_->comm, &st.request);
  return p;
}

void Communicator::gather_shards(const float* mine, const Cuts& cuts, float* flat) {
  if (!mpi_ || size_ == 1) {
    std::copy(mine, mine + cuts.back(), flat);
    return;
  }
  InCollective watch(*this);
  const ShardCounts all = shard_counts(cuts, size_);
  MPI_Allgatherv(mine, all.counts[size_t(rank_)], MPI_FLOAT, flat, all.counts.data(), all.offsets.data(), MPI_FLOAT,
                 handle_->comm);
}

namespace {
// Per-rank counts and offsets of an all-to-all as MPI's ints.
ShardCounts packed_counts(const std::vector<int64_t>& counts, int size, const char* what) {
  MEMOE_CHECK(int(counts.size()) == size, "exchange: ", counts.size(), " ", what, " counts for ", size, " ranks");
  ShardCounts s;
  int64_t at = 0;
  for (int64_t c : counts) {
    MEMOE_CHECK(c >= 0 && at + c < INT_MAX, "exchange: ", what, " counts are negative or more than one call carries");
    s.offsets.push_back(int(at));
    s.counts.push_back(int(c));
    at += c;
  }
  return s;
}
}  // namespace

template <class T>
void Communicator::exchange_values(const T* send, const std::vector<int64_t>& send_counts, T* recv,
                                   const std::vector<int64_t>& recv_counts) {
  const ShardCounts out = packed_counts(send_counts, size_, "send"), in = packed_counts(recv_counts, size_, "receive");
  if (!mpi_ || size_ == 1) {
    MEMOE_CHECK(send_counts[0] == recv_counts[0], "exchange: a world of one sends ", send_counts[0],
                " values and receives ", recv_counts[0]);
    std::copy(send, send + send_counts[0], recv);
    return;
  }
  InCollective watch(*this);
  MPI_Alltoallv(send, out.counts.data(), out.offsets.data(), type_of<T>(), recv, in.counts.data(), in.offsets.data(),
                type_of<T>(), handle_->comm);
}

void Communicator::exchange(const float* send, const std::vector<int64_t>& send_counts, float* recv,
                            const std::vector<int64_t>& recv_counts) {
  exchange_values(send, send_counts, recv, recv_counts);
}
void Communicator::exchange(const int64_t* send, const std::vector<int64_t>& send_counts, int64_t* recv,
                            const std::vector<int64_t>& recv_counts) {
  exchange_values(send, send_counts, recv, recv_counts);
}

std::unique_ptr<Communicator::Pending> Communicator::start_exchange(const float* send,
                                                                   const std::vector<int64_t>& send_counts,
                                                                   float* recv,
                                                                   const std::vector<int64_t>& recv_counts) {
  std::unique_ptr<Pending> p(new Pending(*this));
  const ShardCounts out = packed_counts(send_counts, size_, "send"), in = packed_counts(recv_counts, size_, "receive");
  if (!mpi_ || size_ == 1) {
    MEMOE_CHECK(send_counts[0] == recv_counts[0], "exchange: a world of one sends ", send_counts[0],
                " values and receives ", recv_counts[0]);
    std::copy(send, send + send_counts[0], recv);
    return p;
  }
  Pending::State& st = *p->state_;
  st.send_counts = out.counts;
  st.send_offsets = out.offsets;
  st.recv_counts = in.counts;
  st.recv_offsets = in.offsets;
  MPI_Ialltoallv(send, st.send_counts.data(), st.send_offsets.data(), MPI_FLOAT, recv, st.recv_counts.data(),
                 st.recv_offsets.data(), MPI_FLOAT, handle_->comm, &st.request);
  return p;
}

std::vector<int64_t> Communicator::exchange_counts(const std::vector<int64_t>& send) {
  MEMOE_CHECK(int(send.size()) == size_, "exchange_counts: ", send.size(), " counts for ", size_, " ranks");
  if (!mpi_ || size_ == 1) return send;
  InCollective watch(*this);
  std::vector<int64_t> recv(send.size());
  MPI_Alltoall(send.data(), 1, MPI_INT64_T, recv.data(), 1, MPI_INT64_T, handle_->comm);
  return recv;
}

void Communicator::send(const float* x, int64_t n, int to) {
  MEMOE_CHECK(mpi_ && size_ > 1 && to >= 0 && to < size_ && to != rank_, "send: no rank ", to, " to send to");
  InCollective watch(*this);
  for (int64_t at = 0; at < n; at += kPiece)
    MPI_Send(x + at, int(std::min(kPiece, n - at)), MPI_FLOAT, to, 0, handle_->comm);
}

std::unique_ptr<Communicator::Pending> Communicator::start_send(const float* x, int64_t n, int to, int tag) {
  MEMOE_CHECK(mpi_ && size_ > 1 && to >= 0 && to < size_ && to != rank_, "send: no rank ", to, " to send to");
  MEMOE_CHECK(n <= kPiece, "send: ", n, " values is more than one message holds");
  std::unique_ptr<Pending> p(new Pending(*this));
  MPI_Isend(x, int(n), MPI_FLOAT, to, tag, handle_->comm, &p->state_->request);
  return p;
}

std::unique_ptr<Communicator::Pending> Communicator::start_receive(float* x, int64_t n, int from, int tag) {
  MEMOE_CHECK(mpi_ && size_ > 1 && from >= 0 && from < size_ && from != rank_, "receive: no rank ", from,
              " to receive from");
  MEMOE_CHECK(n <= kPiece, "receive: ", n, " values is more than one message holds");
  std::unique_ptr<Pending> p(new Pending(*this));
  MPI_Irecv(x, int(n), MPI_FLOAT, from, tag, handle_->comm, &p->state_->request);
  return p;
}

void Communicator::receive(float* x, int64_t n, int from) {
  MEMOE_CHECK(mpi_ && size_ > 1 && from >= 0 && from < size_ && from != rank_, "receive: no rank ", from,
              " to receive from");
  InCollective watch(*this);
  for (int64_t at = 0; at < n; at += kPiece)
    MPI_Recv(x + at, int(std::min(kPiece, n - at)), MPI_FLOAT, from, 0, handle_->comm, MPI_STATUS_IGNORE);
}

void Communicator::abort_all(const std::string& message, int code) {
  int world_size = 1;
  if (mpi_) MPI_Comm_size(MPI_COMM_WORLD, &world_size);
  if (world_size > 1) {
    std::fprintf(stderr, "memoe: error on rank %d of %d: %s\n", world_rank_, world_size, message.c_str());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, code);
  }
  std::fprintf(stderr, "memoe: error: %s\n", message.c_str());
  std::exit(code);
}

void Communicator::barrier() {
  InCollective watch(*this);
  if (mpi_ && size_ > 1) MPI_Barrier(handle_->comm);
}

}  // namespace memoe
