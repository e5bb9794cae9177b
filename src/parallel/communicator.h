// The ranks of a run and the collectives between them, over MPI. A process
// started without mpirun is a world of one: every collective returns its
// input and MPI is never initialised, so single-process use needs no MPI
// runtime at all. The model never sees this type; train/ passes it down.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace memoe {

class Communicator {
 public:
  // The world this process was started in: MPI's when a launcher
  // (mpirun / mpiexec: OMPI_COMM_WORLD_SIZE or PMIX_RANK in the
  // environment) started it, else a world of one. MPI is finalised when the
  // returned object is destroyed.
  static std::unique_ptr<Communicator> from_environment();
  // A world of one, whatever the environment (tests, single-rank tools).
  static std::unique_ptr<Communicator> single();

  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  bool is_root() const { return rank_ == 0; }
  // This process's rank in the world (a group's messages name it).
  int world_rank() const { return world_rank_; }

  // A group of this communicator's ranks (MPI_Comm_split: a collective):
  // the ranks passing the same color, ordered by key. It shares the world's
  // watchdog and activity; it must be destroyed before the world.
  std::unique_ptr<Communicator> split(int color, int key);

  // In place: x becomes the element-wise sum over the ranks. OpenMPI's
  // algorithms (ring, recursive doubling, reduce-scatter + all-gather) give
  // every rank the same bits; the data-parallel tests check the replicas.
  void sum(double* x, int64_t n);
  void sum(int64_t* x, int64_t n);
  // x on every rank becomes rank root's.
  void broadcast(float* x, int64_t n, int root = 0);
  void broadcast(int64_t* x, int64_t n, int root = 0);
  // Every rank's `mine`, in rank order (lengths may differ per rank).
  std::vector<int64_t> all_gather(const std::vector<int64_t>& mine);
  std::vector<float> all_gather(const std::vector<float>& mine);
  std::vector<double> all_gather(const std::vector<double>& mine);

  // A flat buffer of n values cut into one contiguous shard per rank:
  // rank r owns [shard_begin(n, r), shard_begin(n, r + 1)).
  int64_t shard_begin(int64_t n, int rank) const { return n * rank / size_; }

  // The shards of a flat buffer: size() + 1 ascending offsets, rank r's
  // shard [cuts[r], cuts[r + 1]), cuts[0] = 0, cuts[size()] = the length.
  using Cuts = std::vector<int64_t>;

  // A collective started and not yet complete: its buffers must stay alive
  // and untouched until wait() returns (or the object is destroyed, which
  // waits).
  class Pending {
   public:
    ~Pending();
    void wait();
    bool done();  // also drives MPI's progress while the caller computes

   private:
    friend class Communicator;
    struct State;
    explicit Pending(Communicator& comm);
    Communicator& comm_;
    std::unique_ptr<State> state_;
  };

  // The first half of a reduce-scatter: every rank's copy of this rank's
  // shard of `flat`, in rank order, into received[size() x shard length].
  // The caller sums them in the order it chooses (MPI's own reduce-scatter
  // promises no order). Non-blocking: returns at once.
  std::unique_ptr<Pending> start_scatter_shards(const float* flat, const Cuts& cuts, float* received);
  // All-gather: every rank's shard (`mine`, this rank's part) into flat.
  void gather_shards(const float* mine, const Cuts& cuts, float* flat);

  // All-to-all (MPI_Alltoallv): send_counts[r] values to rank r, packed in
  // rank order in `send`; recv_counts[r] values from rank r, packed in rank
  // order into `recv`. Blocking.
  void exchange(const float* send, const std::vector<int64_t>& send_counts, float* recv,
                const std::vector<int64_t>& recv_counts);
  void exchange(const int64_t* send, const std::vector<int64_t>& send_counts, int64_t* recv,
                const std::vector<int64_t>& recv_counts);
  // The same, non-blocking: the buffers stay untouched until it completes.
  std::unique_ptr<Pending> start_exchange(const float* send, const std::vector<int64_t>& send_counts, float* recv,
                                          const std::vector<int64_t>& recv_counts);
  // One count to every rank; returns the one each rank sent here.
  std::vector<int64_t> exchange_counts(const std::vector<int64_t>& send);
  // Point to point (blocking): n values to, or from, one other rank.
  void send(const float* x, int64_t n, int to);
  void receive(float* x, int64_t n, int from);
  // The same, non-blocking (MPI_Isend / MPI_Irecv of at most 2^30 values),
  // matched by `tag` as well: a pipeline's activations, their gradients and
  // the tied embedding's parts travel between the same two ranks apart.
  std::unique_ptr<Pending> start_send(const float* x, int64_t n, int to, int tag);
  std::unique_ptr<Pending> start_receive(float* x, int64_t n, int from, int tag);

  // A rank that waits longer than this in one collective exits non-zero,
  // saying what it was waiting in, and mpirun then ends the others: a hung
  // or stopped rank must not leave them waiting forever. <= 0: no limit.
  void set_collective_timeout(double seconds);
  double collective_timeout() const;
  // What the collectives that follow are part of, for that message
  // ("the gradient exchange of step 12").
  void set_activity(const std::string& what);
  void barrier();
  // Ends every rank at once (MPI_Abort) after printing `message` as one
  // line naming this rank: a rank that fails must not leave the others
  // waiting in a collective. In a world of one, prints and exits.
  [[noreturn]] void abort_all(const std::string& message, int code = 1);

 private:
  Communicator(bool mpi, int rank, int size);
  // Marks this rank as inside a collective (for the watchdog) while alive.
  class InCollective;
  struct Watchdog;
  template <class T>
  void exchange_values(const T* send, const std::vector<int64_t>& send_counts, T* recv,
                       const std::vector<int64_t>& recv_counts);
  struct Handle;
  bool mpi_;
  int rank_, size_, world_rank_;
  std::unique_ptr<Handle> handle_;
  std::shared_ptr<Watchdog> watchdog_;
};

}  // namespace memoe
