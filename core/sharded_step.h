// ShardedStep: one training step of a Model's hand-written backward on a ThreadTeam, so that
// every core works on every step. Two ways, both deterministic for a given thread count (a resumed
// run ends bit-identical to an uninterrupted one at the same --threads):
//  - Model::team_step (the MLP): each member owns a block of every layer's output rows, so its
//    weights, gradients and optimizer state stay in its own core's cache; only activations and
//    partial input gradients (tens of KiB) cross cores. Splitting the batch instead moved the whole
//    gradient and weights between cores every step, which cost more than the second core gave.
//  - otherwise, the batch split by rows: each member runs train_step on its rows into its own
//    gradient buffer, summed afterwards in member order.
// With one thread the MLP still takes team_step, as a team of one (its GEMMs go straight to BLAS;
// train_step, with LibTorch ops, is the reference and the GPU's way).
// Either way BLAS runs single-threaded inside the members: at batch 50 this model's GEMMs are too
// small for a multi-threaded BLAS (OpenBLAS loses up to 40 % on some of these shapes on 2 threads).
#pragma once

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include <torch/types.h>

#include "core/data_source.h"
#include "core/model.h"
#include "core/thread_team.h"

namespace dtrain {

class ShardedStep {
 public:
  /// `shards` >= 1 (1: on this thread, Model::team_step as a team of one on the CPU, else
  /// train_step, straight into each parameter's grad).
  /// With more than one, each parameter's grad becomes a view into one flat gradient buffer
  /// (allocated here), and BLAS should run single-threaded (set_blas_threads(1)), as should the
  /// calling thread's OpenMP (LibTorch's intra-op threads).
  ShardedStep(const Model& model, int shards);

  int shards() const { return shards_; }
  /// The threads the shards run on (null with one shard): the optimizer steps on it too.
  ThreadTeam* team() const { return shards_ > 1 ? team_.get() : nullptr; }

  /// Forward and backward of mean cross-entropy over the whole batch (inputs as get() or, on the
  /// CPU, get_stored() gives them): writes (adds, if `accumulate`) loss_scale * d(loss)/d(param)
  /// into each parameter's grad. Returns
  /// {mean loss (0-dim), number of correct predictions (0-dim long)}.
  /// `then`, unless empty, runs once for each member of the team (one on this thread without a
  /// team) as soon as the gradients are complete, with the parameters free to update:
  /// then(k, members) on member k's block (member_rows), as Optimizer::begin_member_step() gives.
  std::pair<torch::Tensor, torch::Tensor> run(const Batch& batch, double loss_scale,
                                              bool accumulate, const MemberStep& then = {});

  /// Logits of `inputs` (no autograd graph), the rows split across the shards like run().
  torch::Tensor forward(const torch::Tensor& inputs);

 private:
  Model model_;
  int shards_;
  std::vector<torch::Tensor> params_;
  std::unique_ptr<ThreadTeam> team_;  // with more than one shard, or a team_step
  // Shards 1..n-1 of the batch split: per parameter, views into each shard's own flat buffer.
  std::vector<std::vector<torch::Tensor>> shard_grads_;
};

}  // namespace dtrain
