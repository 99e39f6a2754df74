// The MPI backend: rank and size from MPI, our ring allreduce or MPI_Allreduce, and the
// coordinator that checks collectives' signatures and reports stalls. With every rank on one
// host, reduce buffers live in a shared-memory window and are reduced in place through it.
#pragma once

#include <mpi.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "distributed/communicator.h"

namespace dtrain::distributed {

/// True if the process was started by an MPI launcher (mpirun/mpiexec/srun with PMI).
bool launched_by_mpi();

/// Initialises MPI once (MPI_THREAD_FUNNELED: only the main thread calls MPI) and finalises it at
/// exit. Call before any other MPI use.
void ensure_mpi_initialized();

/// MPI_Finalize, if ensure_mpi_initialized() started MPI and it is still running; else nothing.
/// For a process that exits without running static destructors (dtrain's main).
void finalize_mpi();

/// Ends every process of the job with `exit_code` if MPI is running with more than one rank
/// (MPI_Abort); returns otherwise. Used when one rank fails alone, so the others do not hang.
void abort_mpi_job(int exit_code);

class MpiCommunicator : public Communicator {
 public:
  explicit MpiCommunicator(AllreduceAlgorithm algorithm = AllreduceAlgorithm::kRing,
                           StallOptions stall = {});
  ~MpiCommunicator() override;

  std::string backend() const override { return "mpi"; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return local_rank_; }
  int local_size() const override { return local_size_; }

  void allreduce(torch::Tensor& tensor, ReduceOp op = ReduceOp::kSum) override;
  bool allreduce_all_finite(torch::Tensor& tensor, ReduceOp op) override;
  void broadcast(torch::Tensor& tensor, int root = 0) override;
  torch::Tensor allgather(const torch::Tensor& tensor) override;
  void barrier() override;
  /// With the ring algorithm and every rank on this host: this rank's slot of a shared-memory
  /// window (MPI_Win_allocate_shared over the ranks). allreduce() of (a part of) it then waits
  /// for every rank to arrive, sums block k of the range across all slots in rank order on
  /// rank k into its slot (checking it for NaN/Inf on the way), waits, copies the other blocks
  /// from their owners' slots, and waits again: no messages, and every rank ends bitwise equal.
  /// Otherwise (several hosts, kMpi, one rank, float16) a plain tensor. Freed with the
  /// communicator (collectively; not when it is destroyed by an exception).
  torch::Tensor reduce_buffer(int64_t numel, torch::ScalarType type) override;
  /// True when allreduce() of `tensor` goes through shared memory (it lies in a reduce buffer's
  /// window and the algorithm is the ring).
  bool in_shared_memory(const torch::Tensor& tensor) const {
    return algorithm_ == AllreduceAlgorithm::kRing && window_of(tensor) != nullptr;
  }

  AllreduceAlgorithm algorithm() const { return algorithm_; }
  void set_algorithm(AllreduceAlgorithm algorithm) { algorithm_ = algorithm; }
  /// Segment size of the ring's pipelined transfers.
  void set_segment_bytes(size_t bytes) { segment_bytes_ = bytes; }

  /// Negotiation before a collective (rank 0 coordinates, as Horovod's controller does; with
  /// every rank on one host, through shared memory instead of messages): every rank presents
  /// `signature`; returns when all have arrived. While some have not arrived after
  /// warning_seconds, rank 0 logs which ones (every warning_seconds); after abort_seconds it
  /// throws CommError naming them (the other ranks a second later). If the signatures differ, every
  /// rank returns the same non-empty message naming the ranks and the fields that differ, built
  /// from each rank's `describe()` (a JSON object). `what` names the collective in messages.
  std::string agree(uint64_t signature, const std::function<std::string()>& describe,
                    const std::string& what) override;

 private:
  struct SharedWindow {
    MPI_Win win = MPI_WIN_NULL;
    std::vector<char*> slots;  // every rank's slot, mapped into this process
    size_t bytes = 0;          // of each slot
    torch::ScalarType type = torch::kFloat;
  };
  /// Elements [start, start + count) of a flat buffer.
  struct Span {
    int64_t start = 0, count = 0;
  };
  /// `count` elements in n contiguous chunks, the first count % n one longer.
  static std::vector<Span> chunks(int64_t count, int n);
  /// One step of a message collective on `data` (elements of `dtype`): sends `out` to rank `to`
  /// while receiving `in` from rank `from`, both in segment_bytes_ pieces; with `reduce`, each
  /// received piece (into scratch_) is added to `in`'s elements as soon as it arrives, else it is
  /// received in place. Waits with the stall check, naming `what`.
  void exchange(char* data, const Span& out, int to, const Span& in, int from, bool reduce,
                torch::ScalarType dtype, int tag, const char* what);
  void ring_allreduce(torch::Tensor& tensor);
  void halving_doubling_allreduce(torch::Tensor& tensor);
  void mpi_allreduce(torch::Tensor& tensor);
  /// The window whose slot (of this rank) holds `tensor`, if the ring reduces it there (more than
  /// one rank, some elements, --allreduce ring); else null.
  const SharedWindow* window_of(const torch::Tensor& tensor) const;
  /// Returns whether every element of the result is finite (the same answer on every rank).
  bool shared_allreduce(const SharedWindow& window, torch::Tensor& tensor, ReduceOp op);
  /// Waits until every rank has entered as many shared barriers, with the stall check naming the
  /// ranks that have not (rank 0 first: the others give it a second's grace, so one report comes
  /// from rank 0). What any rank wrote to shared memory before entering is visible to every rank
  /// after it.
  void shared_barrier(const std::string& what);
  std::string gather_mismatch(const std::string& mine, const std::string& what);

  AllreduceAlgorithm algorithm_;
  StallOptions stall_;
  MPI_Comm ring_comm_ = MPI_COMM_NULL;    // ring traffic
  MPI_Comm coord_comm_ = MPI_COMM_NULL;   // negotiation traffic
  MPI_Comm window_comm_ = MPI_COMM_NULL;  // the shared windows' (only when all ranks share a host)
  std::vector<SharedWindow> windows_;
  /// Each rank's page of a shared window (with window_comm_), written only by that rank.
  struct RankControl {
    uint64_t barriers;      // shared barriers entered
    uint64_t signature[2];  // agree()'s, by the parity of its barrier
    uint64_t nonfinite;     // shared_allreduce(): non-finite results in this rank's block
  };
  MPI_Win control_win_ = MPI_WIN_NULL;
  std::vector<RankControl*> control_;  // every rank's; empty without window_comm_
  uint64_t barriers_ = 0;
  int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1;
  size_t segment_bytes_ = size_t{1} << 20;
  std::vector<char> scratch_;  // receive buffer of the reduce-scatters
};

}  // namespace dtrain::distributed
