// The multi-layer perceptron: input -> (Linear -> activation) x hidden -> Linear -> logits.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include "core/thread_team.h"

namespace dtrain::models {

struct MlpOptions {
  MlpOptions(int64_t in_features, std::vector<int64_t> hidden, int64_t classes)
      : in_features_(in_features), hidden_(std::move(hidden)), classes_(classes) {}
  TORCH_ARG(int64_t, in_features);
  TORCH_ARG(std::vector<int64_t>, hidden);
  TORCH_ARG(int64_t, classes);
  /// "relu", "tanh" or "sigmoid".
  TORCH_ARG(std::string, activation) = "relu";
};

/// Submodules are registered in the order they are applied (fc1, act1, fc2, act2, ..., fcN), so
/// anything that walks named_children() (the ONNX exporter) sees the forward graph.
class MlpImpl : public torch::nn::Cloneable<MlpImpl> {
 public:
  explicit MlpImpl(MlpOptions options);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& x);
  /// Forward and backward of mean cross-entropy by hand (no autograd graph, gradients written
  /// with GEMMs straight into `grads`, one per parameter in parameters() order, or into each
  /// parameter's grad when `grads` is empty). See Model::train_step.
  std::pair<torch::Tensor, torch::Tensor> train_step(const torch::Tensor& x,
                                                     const torch::Tensor& targets,
                                                     double loss_scale, bool accumulate,
                                                     const std::vector<torch::Tensor>& grads = {});
  /// train_step split across a team: member k computes rows [O*k/T, O*(k+1)/T) of every hidden
  /// layer's output (O outputs, T members) and the matching rows of every layer's weight and bias
  /// gradients; a hidden layer's input gradient is summed from the members' partial products in
  /// member order. The last layer (a few classes wide) is computed whole by every member, which
  /// saves the team a barrier each way. Float32 CPU tensors; writes each parameter's grad (which
  /// must exist). The GEMMs go straight to BLAS on buffers kept between steps: at batch 50,
  /// LibTorch's per-op dispatch and allocations cost as much as the arithmetic. See
  /// Model::team_step.
  /// The model's inputs are x * input_scale, or rows `rows` of x when `rows` is defined (1-D
  /// int64, one per target: see Batch::rows); uint8 x (pixels) is converted, and rows gathered,
  /// by each member into a buffer of its own, which no other core writes. Returns {loss,
  /// number of correct predictions}. `then`: as Model::team_step's.
  std::pair<torch::Tensor, torch::Tensor> train_step_team(
      const torch::Tensor& x, const torch::Tensor& rows, double input_scale,
      const torch::Tensor& targets, double loss_scale, bool accumulate, ThreadTeam& team,
      const MemberStep& then = {});
  void pretty_print(std::ostream& stream) const override;

  MlpOptions options;

 private:
  std::vector<torch::nn::Linear> linears_;
  std::vector<std::shared_ptr<torch::nn::Module>> activations_;
  // train_step_team's buffers, kept so each stays in the cache of the core that writes it. Hidden
  // layers' outputs are stored transposed ([outputs x batch]), so a member's rows are contiguous.
  struct TeamBuffers {
    std::vector<std::vector<float>> inputs;              // [k]: its copy of the scaled inputs
    std::vector<std::vector<float>> outputs;             // [l]: hidden layer l's output
    std::vector<std::vector<std::vector<float>>> parts;  // [l][k]: member k's part of d/d input
    std::vector<std::vector<float>> logits;              // [k]: logits, then d loss / d logits
    std::vector<std::vector<float>> grad;                // [k]: d loss / d its rows of a layer
  };
  TeamBuffers team_buffers_;
};
TORCH_MODULE(Mlp);

}  // namespace dtrain::models
