#include "models/mlp.h"

#include <torch/nn/modules/activation.h>

#include "core/errors.h"

namespace dtrain::models {

MlpImpl::MlpImpl(MlpOptions options_) : options(std::move(options_)) { reset(); }

void MlpImpl::reset() {
  const auto& act = options.activation();
  if (act != "relu" && act != "tanh" && act != "sigmoid") {
    throw ConfigError("--activation: expected relu, tanh or sigmoid, got " + act);
  }
  linears_.clear();
  activations_.clear();
  int64_t in = options.in_features();
  for (size_t i = 0; i <= options.hidden().size(); ++i) {
    const bool last = i == options.hidden().size();
    const int64_t out = last ? options.classes() : options.hidden()[i];
    linears_.push_back(register_module("fc" + std::to_string(i + 1), torch::nn::Linear(in, out)));
    if (!last) {
      const std::string name = "act" + std::to_string(i + 1);
      if (act == "relu") {
        activations_.push_back(register_module(name, torch::nn::ReLU(torch::nn::ReLUOptions(true))));
      } else if (act == "tanh") {
        activations_.push_back(register_module(name, torch::nn::Tanh()));
      } else {
        activations_.push_back(register_module(name, torch::nn::Sigmoid()));
      }
    }
    in = out;
  }
}

torch::Tensor MlpImpl::forward(const torch::Tensor& input) {
  torch::Tensor x = input;
  const auto& act = options.activation();
  for (size_t i = 0; i < linears_.size(); ++i) {
    x = linears_[i]->forward(x);
    if (i + 1 < linears_.size()) {
      if (act == "relu") {
        x = torch::relu_(x);
      } else if (act == "tanh") {
        x = torch::tanh(x);
      } else {
        x = torch::sigmoid(x);
      }
    }
  }
  return x;
}

void MlpImpl::pretty_print(std::ostream& stream) const {
  stream << "dtrain::Mlp(" << options.in_features();
  for (int64_t h : options.hidden()) stream << "-" << h;
  stream << "-" << options.classes() << ", " << options.activation() << ")";
}

}  // namespace dtrain::models
