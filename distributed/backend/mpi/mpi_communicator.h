// The MPI backend: rank and size from MPI, our ring allreduce or MPI_Allreduce, and the
// coordinator that checks collectives' signatures and reports stalls.
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
  void broadcast(torch::Tensor& tensor, int root = 0) override;
  torch::Tensor allgather(const torch::Tensor& tensor) override;
  void barrier() override;

  AllreduceAlgorithm algorithm() const { return algorithm_; }
  void set_algorithm(AllreduceAlgorithm algorithm) { algorithm_ = algorithm; }
  /// Segment size of the ring's pipelined transfers.
  void set_segment_bytes(size_t bytes) { segment_bytes_ = bytes; }

  /// Negotiation before a collective (rank 0 coordinates, as Horovod's controller does): every
  /// rank presents `signature`; returns when all have arrived. While some have not arrived after
  /// warning_seconds, rank 0 logs which ones (every warning_seconds); after abort_seconds it
  /// throws CommError naming them. If the signatures differ, every rank returns the same
  /// non-empty message naming the ranks and the fields that differ, built from each rank's
  /// `describe()` (a JSON object). `what` names the collective in messages.
  std::string agree(uint64_t signature, const std::function<std::string()>& describe,
                    const std::string& what) override;

 private:
  void ring_allreduce(torch::Tensor& tensor);
  void mpi_allreduce(torch::Tensor& tensor);
  std::string gather_mismatch(const std::string& mine, const std::string& what);

  AllreduceAlgorithm algorithm_;
  StallOptions stall_;
  MPI_Comm ring_comm_ = MPI_COMM_NULL;   // ring traffic
  MPI_Comm coord_comm_ = MPI_COMM_NULL;  // negotiation traffic
  int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1;
  size_t segment_bytes_ = size_t{1} << 20;
  std::vector<char> scratch_;  // receive buffer of the ring's reduce-scatter
};

}  // namespace dtrain::distributed
