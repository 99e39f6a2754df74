// Model: what the Trainer needs of a network, independent of which network it is.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>
#include <torch/types.h>

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
};

}  // namespace dtrain
