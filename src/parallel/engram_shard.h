// Sharded Engram tables: each Engram table's rows, and their AdamW
// moments, split over the ranks (rank r owns rows [rows·r/R, rows·(r+1)/R),
// the split ZeRO-1 uses for the tables' moments), so a table larger than one
// rank's memory trains. The rows a pass reads follow from its token ids
// alone, so before the forward pass each rank asks the owners for them
// (MPI_Alltoallv of the unique row ids) and the rows travel back in a
// non-blocking all-to-all while the layers below the Engram layer run; the
// layer gathers from that fetched table (model/engram.h's EngramRowSource).
//
// Row gradients travel as in data parallel (parallel/data_parallel.h: every
// rank's (row, gradient) pairs merged in rank order on every rank), so the
// clipping norm keeps its bits; each owner then applies the lazy Adam
// update to its own rows and the others drop them. A rank holds its rows in
// a table tensor of the full shape whose other rows it never touches
// (zeroed pages cost no memory).
#pragma once
#include <memory>
#include <vector>

#include "parallel/communicator.h"
#include "model/model.h"

namespace memoe {

class ShardedEngramTables final : public EngramRowSource {
 public:
  ShardedEngramTables(Communicator& world, const Model& model);
  ~ShardedEngramTables() override;

  // Rank r's first row of a table of `rows` rows.
  int64_t first_row(int64_t rows, int rank) const { return world_.shard_begin(rows, rank); }
  // Every table keeps only this rank's rows (a fresh tensor of the same
  // shape, the other rows untouched).
  void keep_owned_rows(ModelParams& params) const;

  // Starts fetching every Engram layer's rows for a pass over token ids
  // [batch, seq_len]: the ids go to their owners now, the rows arrive while
  // the layers below run. A collective: every rank calls it once per pass.
  void prefetch(const Model& model, const int64_t* ids, int64_t batch, int64_t seq_len);
  // The layer's fetched rows (prefetched, or fetched now).
  const Tensor& fetch(int layer, const EngramParams& p, std::vector<int64_t>& rows,
                      std::vector<int64_t>& held) override;
  // One fetch with no rows of this rank's own (it still serves its peers'):
  // a rank with fewer evaluation batches joins its peers' remaining passes.
  void idle_fetch(int layer, const EngramParams& p);

  // Since the last reset: seconds waiting for fetched rows, bytes of rows
  // this rank sent to others.
  double wait_seconds() const { return wait_s_; }
  int64_t sent_bytes() const { return sent_bytes_; }
  void reset_counters() { wait_s_ = 0, sent_bytes_ = 0; }

 private:
  struct Fetch;
  void start(int layer, const EngramParams& p, std::vector<int64_t> wanted);

  Communicator& world_;
  std::vector<std::unique_ptr<Fetch>> fetches_;  // per layer
  double wait_s_ = 0;
  int64_t sent_bytes_ = 0;
};

}  // namespace memoe
