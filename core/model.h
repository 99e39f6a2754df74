// Model: what the Trainer needs of a network, independent of which network it is.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>

#include <torch/types.h>
#include <nlohmann/json.hpp>

#include "core/data_source.h"
#include "core/thread_team.h"

namespace torch::nn {
class Module;
}

namespace dtrain {

/// A built network. models/ makes these from a RunConfig; the Trainer only trains them.
struct Model {
  /// Owns the parameters, named by their module path ("fc1.weight"): the checkpoint keys.
  std::shared_ptr<torch::nn::Module> module;
  /// inputs [B, features] float -> logits [B, classes].
  std::function<torch::Tensor(const torch::Tensor&)> forward;
  /// Architecture description (RunConfig::model_json()) recorded with checkpoints.
  nlohmann::json spec;
  /// Optional fast path: forward and backward of mean cross-entropy without autograd. Writes
  /// loss_scale * d(loss)/d(param) into `grads` (one tensor per module->parameters() entry, in
  /// that order; each parameter's own grad when `grads` is empty), adding to it if `accumulate`,
  /// and returns {loss (unscaled, 0-dim), logits}. Must match the autograd gradients within float
  /// rounding, and be safe to call from several threads at once on different inputs and
  /// `grads` (the Trainer splits a batch across threads: core/sharded_step.h). The Trainer uses
  /// autograd when it is empty.
  std::function<std::pair<torch::Tensor, torch::Tensor>(
      const torch::Tensor& inputs, const torch::Tensor& targets, double loss_scale, bool accumulate,
      const std::vector<torch::Tensor>& grads)>
      train_step;
  /// Optional: train_step's work split across a ThreadTeam (of one, too), each member owning a
  /// block of every layer's output rows (its weights, gradients and optimizer state stay in its
  /// core's cache; activations and partial input gradients are what crosses cores). On the CPU,
  /// on a batch as the source stores it (Batch::input_scale; uint8 inputs are converted by each
  /// member, and rows left ungathered, Batch::rows, gathered by them). Writes each parameter's
  /// grad, and returns {loss (unscaled, 0-dim), number of correct predictions (0-dim int64, as
  /// logits.argmax(1) counts them)}. The Trainer prefers it to splitting the batch
  /// (core/sharded_step.h) when there is one.
  /// `then`, unless empty, is run by each member k once the step has written its block
  /// (member_rows) of every parameter's grad and every member is done reading the parameters:
  /// then(k, team.size()) may update that block (the optimizer step, while it is in k's cache).
  std::function<std::pair<torch::Tensor, torch::Tensor>(const Batch& batch, double loss_scale,
                                                        bool accumulate, ThreadTeam& team,
                                                        const MemberStep& then)>
      team_step;
};

}  // namespace dtrain
