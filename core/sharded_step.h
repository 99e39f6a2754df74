// ShardedStep: one training step of a Model's hand-written train_step over a batch split into
// row shards, run on the intra-op threads at once. Each shard runs single-threaded kernels and
// writes its gradients into its own flat buffer; the buffers are then summed element-wise in shard
// order, so the result depends on the shard count only, never on thread timing (a resumed run
// ends bit-identical to an uninterrupted one at the same thread count).
//
// Why: at batch 50 this model's GEMMs are too small for a multi-threaded BLAS (OpenBLAS loses up
// to 40 % on some of these shapes with 2 threads), while two independent half-batches keep both
// cores busy.
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
  /// `shards` >= 1 (1: train_step runs on this thread straight into each parameter's grad).
  /// With more than one, each parameter's grad becomes a view into one flat gradient buffer
  /// (allocated here), and BLAS should run single-threaded (set_blas_threads(1)), as should the
  /// calling thread's OpenMP (LibTorch's intra-op threads).
  ShardedStep(const Model& model, int shards);

  int shards() const { return shards_; }
  /// The threads the shards run on (null with one shard): the optimizer steps on it too.
  ThreadTeam* team() const { return team_.get(); }

  /// Forward and backward of mean cross-entropy over the whole batch: writes (adds, if
  /// `accumulate`) loss_scale * d(loss)/d(param) into each parameter's grad. Returns
  /// {mean loss (0-dim), number of correct predictions (0-dim long)}.
  std::pair<torch::Tensor, torch::Tensor> run(const Batch& batch, double loss_scale,
                                              bool accumulate);

  /// Logits of `inputs` (no autograd graph), the rows split across the shards like run().
  torch::Tensor forward(const torch::Tensor& inputs);

 private:
  /// Row range [begin, end) of shard `k` of a batch of `rows`.
  std::pair<int64_t, int64_t> rows_of(int64_t k, int64_t rows) const;

  Model model_;
  int shards_;
  std::vector<torch::Tensor> params_;
  std::unique_ptr<ThreadTeam> team_;                     // with more than one shard
  torch::Tensor flat_grad_;                              // every parameter's grad is a view into it
  std::vector<torch::Tensor> shard_flat_;                // shards 1..n-1: their own flat buffers
  std::vector<std::vector<torch::Tensor>> shard_grads_;  // views into shard_flat_, per parameter
};

}  // namespace dtrain
