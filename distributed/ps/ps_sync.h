// Parameter-server training on the worker side: GradientSync over gRPC to the ps tasks.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "core/gradient_sync.h"
#include "core/optimizers.h"
#include "distributed/fault_injection.h"
#include "distributed/tf_config.h"

namespace dtrain::distributed::ps {

class Slice;       // ps.proto
struct WireSlice;  // ps_wire.h

struct PsSyncOptions {
  TfConfig cluster;
  bool sync = true;
  std::string token;                      ///< DTRAIN_CLUSTER_TOKEN
  std::string tls_cert, tls_key, tls_ca;  ///< PEM files (--tls-*); none: plain TCP
  double connect_timeout_seconds = 120;
  double peer_timeout_seconds = 30;
  int64_t max_message_bytes = int64_t{256} << 20;
  bool fp16_compression = false;  ///< --compression fp16: gradients pushed in half precision
  OptimizerSettings optimizer;
  FaultInjection fault;
};

/// A worker (or the chief) of a parameter-server cluster. Training tasks are ranked chief first,
/// then workers by index; each trains on its shard. Every step it pushes its gradient slices to
/// the ps tasks, which average them (sync) or apply them on arrival (async), and copies back the
/// updated values. The chief initialises the ps tasks, writes outputs and shuts them down.
class PsSync : public GradientSync {
 public:
  explicit PsSync(PsSyncOptions options);
  ~PsSync() override;

  std::string name() const override { return "parameter_server"; }
  int rank() const override { return rank_; }
  int world_size() const override { return world_; }
  int local_size() const override { return local_size_; }
  bool is_writer() const override { return options_.cluster.is_chief(); }
  /// Sync mode: the ps tasks combine every task's wishes with the step's pushes (PushReply).
  bool agrees_on_step_control() const override { return options_.sync || world_ == 1; }

  void check_consistent(const nlohmann::json& shared_config) override;
  void broadcast_state(const NamedTensors& params, Optimizer& optimizer) override;
  Outcome synchronize(const NamedTensors& grads) override;
  std::vector<double> sum(std::vector<double> values) override;
  void gather_state(const NamedTensors& params, Optimizer& optimizer, bool final) override;
  void finish() override;
  nlohmann::json describe() const override;

 private:
  struct Peer;
  void connect();
  /// How long one call may take: a sync step waits for the slowest worker, bounded by the ps's
  /// own peer timeout.
  double call_timeout_seconds() const { return options_.peer_timeout_seconds * 2 + 30; }
  /// Writes peer's reply values into the model's parameters (CommError if they are not its
  /// range).
  void take_values(size_t peer, const Slice& slice);
  void take_values(size_t peer, const WireSlice& values);

  PsSyncOptions options_;
  std::string task_;
  int rank_ = 0, world_ = 1, local_size_ = 1;
  std::vector<std::unique_ptr<Peer>> peers_;
  std::vector<std::pair<int64_t, int64_t>> ranges_;
  std::string shared_config_;
  NamedTensors params_;  // the model's parameters: the ps tasks' values are written into them
  int64_t total_ = 0;    // their element count: the length of the protocol's flat vector
  std::vector<int64_t> versions_;
  int64_t step_ = 0, reduce_count_ = 0;
  std::map<int64_t, int64_t> staleness_;
  std::atomic<bool> stop_{false};
  std::thread heartbeat_;
};

}  // namespace dtrain::distributed::ps
