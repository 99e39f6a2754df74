// Communicator: collectives over contiguous tensors, whatever moves the bytes (MPI, NCCL, nothing).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <torch/types.h>

namespace dtrain::distributed {

enum class ReduceOp { kSum, kAverage };

/// Which allreduce algorithm the MPI backend runs: our segmented ring, or the MPI library's own
/// MPI_Allreduce (kept as the reference).
enum class AllreduceAlgorithm { kRing, kMpi };

/// How long a collective may wait for its peers: a warning naming what is waited for every
/// warning_seconds, then CommError (and the backend's abort) at abort_seconds.
struct StallOptions {
  double warning_seconds = 60;
  double abort_seconds = 600;
};

/// Collectives on contiguous CPU (MPI) or CUDA (NCCL) tensors of float32, float16, float64,
/// int32 or int64. Every rank must call the same collectives in the same order with tensors of
/// the same size and dtype. Errors throw CommError naming the call, the rank and the reason.
class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual std::string backend() const = 0;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  /// Rank among the processes on this host, and their number.
  virtual int local_rank() const = 0;
  virtual int local_size() const = 0;

  /// In place. kAverage divides by size() after summing (integers: truncating division).
  virtual void allreduce(torch::Tensor& tensor, ReduceOp op = ReduceOp::kSum) = 0;
  /// allreduce(), then whether every element of the result is finite: the same answer on every
  /// rank. Backends that reduce through shared memory check their own part as they reduce it.
  virtual bool allreduce_all_finite(torch::Tensor& tensor, ReduceOp op);
  /// In place: every rank ends with root's tensor (also uint8).
  virtual void broadcast(torch::Tensor& tensor, int root = 0) = 0;
  /// Returns [size(), *tensor.sizes()]: every rank's tensor, in rank order (also uint8).
  virtual torch::Tensor allgather(const torch::Tensor& tensor) = 0;
  virtual void barrier() = 0;

  /// Where this backend's collectives want their tensors (CPU for MPI, the local GPU for NCCL).
  virtual torch::Device device() const { return torch::kCPU; }

  /// Memory for a tensor that allreduce() is called on again and again (the gradients, which then
  /// live in it): `numel` zeros of `type` on device(). A backend may hand out memory it reduces
  /// faster in place (the MPI backend with every rank on one host: this rank's slot of a
  /// shared-memory window); allreduce() also takes any contiguous part of it. Collective: every
  /// rank calls it at the same point with the same arguments.
  virtual torch::Tensor reduce_buffer(int64_t numel, torch::ScalarType type);

  /// Negotiation before a collective: every rank presents `signature`. Returns "" when all agree,
  /// else the same message on every rank naming the ranks and the fields of `describe()` (a JSON
  /// object) that differ. Reports ranks that do not arrive, and throws CommError once they stall
  /// past the abort limit. `what` names the collective in messages.
  virtual std::string agree(uint64_t signature, const std::function<std::string()>& describe,
                            const std::string& what) = 0;
};

/// FNV-1a hash, for signatures.
uint64_t fnv1a(const std::string& text);

/// A communicator of one process: collectives are no-ops (allgather adds the leading dim).
std::unique_ptr<Communicator> make_local_communicator();

}  // namespace dtrain::distributed
