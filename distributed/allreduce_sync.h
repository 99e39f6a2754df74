// Horovod-style data parallelism: fused gradient allreduce behind core's GradientSync.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/gradient_sync.h"
#include "distributed/communicator.h"
#include "distributed/fault_injection.h"

namespace dtrain::distributed {

struct AllreduceSyncOptions {
  std::string algorithm = "ring";    ///< recorded in run.json: ring, mpi, nccl, local
  double fusion_threshold_mb = 128;  ///< gradients are packed into buffers up to this size
  bool fp16_compression = false;     ///< allreduce in half precision (Horovod Compression.fp16)
  int64_t backward_passes_per_step = 1;
  FaultInjection fault;
};

/// Each synchronize(): a negotiation (signature of names, shapes, dtypes and step, with stall
/// reporting), then the fusion buffers averaged across ranks and checked for NaN/Inf (all ranks
/// then skip the step together). After place_gradients() the gradients are views into one flat
/// buffer from the communicator's reduce_buffer() and the fusion buffers are parts of it, so
/// nothing is copied; otherwise (fp16 compression, gradients moved elsewhere) they are packed
/// into fusion buffers and unpacked afterwards.
class AllreduceSync : public GradientSync {
 public:
  AllreduceSync(std::unique_ptr<Communicator> comm, AllreduceSyncOptions options);
  /// Gives placed gradients memory of their own again (the communicator's buffer goes with it).
  ~AllreduceSync() override;

  std::string name() const override { return "allreduce"; }
  int rank() const override { return comm_->rank(); }
  int world_size() const override { return comm_->size(); }
  int local_size() const override { return comm_->local_size(); }
  int64_t backward_passes_per_step() const override { return options_.backward_passes_per_step; }

  void check_consistent(const nlohmann::json& shared_config) override;
  void broadcast_state(const NamedTensors& params, Optimizer& optimizer) override;
  /// Float32 parameters on the communicator's device, without fp16 compression: their grads
  /// become views into one reduce_buffer() (in parameter order, the control slots after them).
  void place_gradients(const NamedTensors& params) override;
  Outcome synchronize(const NamedTensors& grads) override;
  /// Every rank's step control travels in the last fusion buffer (kControlSlots elements after
  /// the gradients), so all ranks take the same decision after the same step at no extra cost.
  bool agrees_on_step_control() const override { return true; }
  std::vector<double> sum(std::vector<double> values) override;
  nlohmann::json describe() const override;

  Communicator& communicator() { return *comm_; }

 private:
  struct Bucket {
    std::vector<size_t> members;  // indices into the gradient list
    torch::Tensor buffer;         // flat, on the communicator's device (a part of placed_ in place)
    int64_t grad_numel = 0;       // elements of gradients; the last bucket has control slots after
  };
  /// True when `grads` are the placed gradients, in their order and memory.
  bool in_place(const NamedTensors& grads) const;
  void plan_buckets(const NamedTensors& grads, bool in_place);
  void inject_fault(const NamedTensors& grads);
  /// Writes this rank's control_ into the last bucket's control slots / reads the sums back.
  void write_control(Bucket& b) const;
  void read_control(const Bucket& b);
  // Votes for stopping on SIGTERM, SIGINT and SIGUSR1, then checkpoint requests.
  static constexpr int64_t kControlSlots = 4;

  std::unique_ptr<Communicator> comm_;
  AllreduceSyncOptions options_;
  std::vector<Bucket> buckets_;
  bool buckets_in_place_ = false;
  torch::Tensor flat_;   // placed gradients, then kControlSlots; undefined until placed
  NamedTensors placed_;  // the parameters whose grads are views into flat_
  std::string layout_;   // JSON description of names, shapes, dtypes
  uint64_t layout_hash_ = 0;
  size_t planned_tensors_ = 0;
  int64_t step_ = 0;
};

}  // namespace dtrain::distributed
