// GradientSync: the one seam between the Trainer and distribution strategies.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>
#include <nlohmann/json.hpp>

namespace dtrain {

class Optimizer;

/// A parameter or gradient with its module-qualified name ("fc1.weight").
using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

/// How gradients (and shared state) are kept consistent across processes. core declares it;
/// distributed/ implements it (allreduce, parameter server). The default does nothing: a
/// single process.
class GradientSync {
 public:
  virtual ~GradientSync() = default;

  virtual std::string name() const { return "none"; }
  virtual int rank() const { return 0; }
  virtual int world_size() const { return 1; }
  /// Processes on this host (threads per process default to cores / local_size()).
  virtual int local_size() const { return 1; }
  /// True on the process that writes outputs/ and prints progress.
  virtual bool is_writer() const { return rank() == 0; }

  /// Called at the start of fit(): every process must run the same configuration (the fields of
  /// RunConfig::shared_json() plus the model). Throws ConfigError naming the processes and the
  /// fields that differ.
  virtual void check_consistent(const nlohmann::json& shared_config) {}

  /// Local batches whose gradients are accumulated (and averaged) before one synchronize().
  virtual int64_t backward_passes_per_step() const { return 1; }

  /// Called once before training (and after a resume): make every process start from the
  /// same parameters and optimizer state.
  virtual void broadcast_state(const NamedTensors& params, Optimizer& optimizer) {}

  /// Called once before training, after broadcast_state(), by every process: a strategy may
  /// move each parameter's grad (keeping its values) into memory of its own, such as the buffers
  /// it reduces, so that synchronize() copies nothing. The Trainer writes gradients in place
  /// (never replaces a defined grad), so they stay there.
  virtual void place_gradients(const NamedTensors& params) {}

  /// What the Trainer does after synchronize().
  enum class Outcome {
    kApply,    ///< gradients now hold the global average: run the local optimizer step
    kSkip,     ///< skip this step (every process does; e.g. non-finite gradients)
    kUpdated,  ///< the parameters were updated elsewhere (parameter server) and copied in
  };

  /// Called after backward on every process, once per optimizer step.
  virtual Outcome synchronize(const NamedTensors& grads) { return Outcome::kApply; }
  /// True when synchronize() neither reads nor changes the gradients and always answers kApply
  /// (SingleProcessSync): the Trainer may then apply the optimizer step inside the backward pass,
  /// each thread on its part as soon as it is done.
  virtual bool leaves_gradients_alone() const { return false; }

  /// What to do at a step boundary, beyond the step itself.
  struct StepControl {
    int stop_signal = 0;      ///< stop after this step (the signal that asked for it; 0: go on)
    bool checkpoint = false;  ///< write a mid-epoch checkpoint after this step
  };
  /// This process's wishes for the coming step, given before synchronize(). step_control() after
  /// it returns the decision: for one process its own wishes; strategies that agree on it
  /// (agrees_on_step_control()) carry every process's wishes with the gradients, so all stop or
  /// checkpoint after the same step.
  void propose_step_control(const StepControl& mine) { control_ = mine; }
  StepControl step_control() const { return control_; }
  /// True when every process receives the same step_control(), so the Trainer may call
  /// collectives (sum) when it acts on it.
  virtual bool agrees_on_step_control() const { return world_size() == 1; }

  /// Called on the writer before it saves a checkpoint: brings the local parameters and optimizer
  /// state up to date with the authoritative copy (a parameter server's). `final`: training is
  /// over; wait for the other processes to finish first.
  virtual void gather_state(const NamedTensors& params, Optimizer& optimizer, bool final) {}

  /// Called by every process after its outputs are written, before it exits; also after a stop
  /// signal ended training (Interrupted), once the writer's checkpoint is written.
  virtual void finish() {}

  /// Sums each value across processes (used for metrics). The default returns `values`.
  virtual std::vector<double> sum(std::vector<double> values) { return values; }

  /// Extra fields for run.json (world size, algorithm, ...).
  virtual nlohmann::json describe() const { return {{"strategy", name()}, {"world_size", 1}}; }

 protected:
  StepControl control_;
};

/// One process, nothing to keep consistent: the default strategy (--distributed none).
class SingleProcessSync final : public GradientSync {
 public:
  bool leaves_gradients_alone() const override { return true; }
};

}  // namespace dtrain
