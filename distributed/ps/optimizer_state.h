// Moves optimizer state between per-parameter form (the trainer's optimizer, checkpoints) and
// the flat form the parameter servers hold (one tensor per ps range).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

namespace torch::optim {
class Optimizer;
}

namespace dtrain::distributed::ps {

/// An optimizer's per-element slots over a flat vector ("momentum_buffer" for SGD; "exp_avg",
/// "exp_avg_sq" for Adam), plus Adam's step count. Empty slots: no state yet (before step 1).
struct FlatOptimizerState {
  std::map<std::string, torch::Tensor> slots;
  int64_t step = 0;
};

/// The slots of `optimizer` over `params`, concatenated in order.
FlatOptimizerState flatten_state(torch::optim::Optimizer& optimizer,
                                 const std::vector<torch::Tensor>& params);
/// Sets `optimizer`'s state for `params` from the concatenated slots.
void unflatten_state(torch::optim::Optimizer& optimizer, const std::vector<torch::Tensor>& params,
                     const FlatOptimizerState& state);

/// Builds the optimizer RunConfig-style JSON describes ({optimizer, learning_rate, momentum,
/// weight_decay}) over `params`. Throws ConfigError for an unknown optimizer.
std::unique_ptr<torch::optim::Optimizer> make_optimizer(const nlohmann::json& config,
                                                        const std::vector<torch::Tensor>& params);

}  // namespace dtrain::distributed::ps
