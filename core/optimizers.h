// Optimizers: each kind has one home here (build, step, state layout for checkpoints and the
// parameter servers). dtrain keeps optimizer state itself, by parameter position and slot name,
// rather than in LibTorch's optimizers, whose state maps are keyed by a LibTorch-private,
// version-dependent key; the arithmetic follows torch::optim::SGD and torch::optim::Adam
// exactly (tests compare the two).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>
#include <nlohmann/json.hpp>

#include "core/thread_team.h"

namespace torch::serialize {
class InputArchive;
class OutputArchive;
}  // namespace torch::serialize

namespace dtrain {

struct RunConfig;

/// What an optimizer is built from: the RunConfig fields it reads.
struct OptimizerSettings {
  std::string name = "sgd";
  double learning_rate = 0.01;
  double momentum = 0.9;
  double weight_decay = 0.0;

  static OptimizerSettings from(const RunConfig& config);
  nlohmann::json to_json() const;
  /// Throws ConfigError naming the missing/mistyped key or the unknown optimizer.
  static OptimizerSettings from_json(const nlohmann::json& j);
};

/// Optimizer state over a flat vector (the parameters concatenated in order): one tensor per
/// slot ("momentum_buffer"; "exp_avg", "exp_avg_sq"), plus the step count. No slots: no state
/// yet (before the first step), or an optimizer without state (SGD without momentum).
struct FlatOptimizerState {
  std::map<std::string, torch::Tensor> slots;
  int64_t step = 0;
};

/// An optimizer over a fixed list of parameters.
class Optimizer {
 public:
  virtual ~Optimizer() = default;

  const OptimizerSettings& settings() const { return settings_; }
  const std::vector<torch::Tensor>& params() const { return params_; }
  /// The per-element state slots this kind keeps (once it has taken a step).
  virtual std::vector<std::string> slot_names() const = 0;

  void zero_grad();
  /// Steps then split each parameter's rows (dim 0) across `team`'s members (null: this thread).
  /// The team must outlive the optimizer's steps. Elementwise: the result does not change.
  void set_team(ThreadTeam* team) { team_ = team; }
  /// The rate the next step() uses (warm-up and scaling change it between epochs).
  void set_learning_rate(double rate) { settings_.learning_rate = rate; }
  /// One step over every parameter with a gradient: begin_member_step() run on the team's
  /// members (or on this thread), or the kind's whole step where it cannot be split.
  void step();
  /// The step split by rows, for a caller that runs it on threads of its own (the Trainer, inside
  /// Model::team_step, each member on the rows whose gradients it has just written). Prepares the
  /// step here (state, step count) and returns the update of one member's rows (member_rows) of
  /// every parameter with a gradient. The caller must run it once for each member 0..members-1
  /// (on any threads, at once) before anything reads the parameters or the state again; the
  /// result is the same bits as step() whatever `members` is. Null, preparing nothing, where the
  /// kind cannot split this step (SGD on tensors other than contiguous float32 CPU ones): then
  /// call step().
  virtual MemberStep begin_member_step() = 0;

  /// Number of steps taken (or restored).
  int64_t steps() const { return step_; }
  /// True once the state slots exist.
  bool has_state() const { return !slots_.empty(); }

  /// The state concatenated over the parameters (on the CPU); empty slots if there is none.
  FlatOptimizerState flatten() const;
  /// Sets the state from `flat`; throws DataError naming the slot if it does not fit (missing or
  /// unknown slot, wrong element count).
  void unflatten(const FlatOptimizerState& flat);

  /// Writes "step" and "<slot>/<index>" (CPU tensors), so checkpoints are device-independent.
  void save(torch::serialize::OutputArchive& archive) const;
  /// Reads what save() wrote onto each parameter's device; throws DataError naming the entry
  /// that is missing or has the wrong shape.
  void load(torch::serialize::InputArchive& archive);

  /// Use make_optimizer(); kinds inherit this constructor.
  Optimizer(OptimizerSettings settings, std::vector<torch::Tensor> params);

 protected:
  /// The step on this thread, for what begin_member_step() cannot split.
  virtual void whole_step() = 0;

  /// Slot name -> one tensor per parameter (created by the kind's first step).
  std::map<std::string, std::vector<torch::Tensor>> slots_;
  int64_t step_ = 0;
  OptimizerSettings settings_;
  std::vector<torch::Tensor> params_;
  ThreadTeam* team_ = nullptr;
};

/// Builds the optimizer `settings.name` names over `params`; throws ConfigError listing the known
/// optimizers if there is none of that name.
std::unique_ptr<Optimizer> make_optimizer(const OptimizerSettings& settings,
                                          std::vector<torch::Tensor> params);

/// The names make_optimizer accepts.
std::vector<std::string> optimizer_names();

}  // namespace dtrain
