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
        activations_.push_back(
            register_module(name, torch::nn::ReLU(torch::nn::ReLUOptions(true))));
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

std::pair<torch::Tensor, torch::Tensor> MlpImpl::train_step(
    const torch::Tensor& input, const torch::Tensor& targets, double loss_scale, bool accumulate,
    const std::vector<torch::Tensor>& grads) {
  torch::NoGradGuard no_grad;
  TORCH_CHECK(grads.empty() || grads.size() == 2 * linears_.size(),
              "train_step: expected one gradient tensor per parameter");
  const auto& act = options.activation();
  // Forward, keeping each layer's input (post-activation) for the backward pass.
  std::vector<torch::Tensor> inputs;
  inputs.reserve(linears_.size());
  torch::Tensor x = input;
  for (size_t i = 0; i < linears_.size(); ++i) {
    inputs.push_back(x);
    x = torch::addmm(linears_[i]->bias, x, linears_[i]->weight.t());
    if (i + 1 < linears_.size()) {
      if (act == "relu")
        x.relu_();
      else if (act == "tanh")
        x.tanh_();
      else
        x.sigmoid_();
    }
  }
  const torch::Tensor logits = x;
  const torch::Tensor log_probs = torch::log_softmax(logits, 1);
  const torch::Tensor loss = torch::nll_loss(log_probs, targets);

  // d(mean CE)/d(logits) = (softmax - onehot) / batch.
  torch::Tensor g = log_probs.exp();
  g.scatter_add_(1, targets.unsqueeze(1), torch::full({targets.size(0), 1}, -1.0, g.options()));
  g.mul_(loss_scale / static_cast<double>(targets.size(0)));

  auto write = [&](size_t index, torch::Tensor& param, const auto& compute_into,
                   const auto& add_into) {
    torch::Tensor own = grads.empty() ? torch::Tensor() : grads[index];
    torch::Tensor& grad = grads.empty() ? param.mutable_grad() : own;
    if (!grad.defined()) {
      grad = torch::zeros_like(param);
      add_into(grad);
    } else if (accumulate) {
      add_into(grad);
    } else {
      compute_into(grad);
    }
  };
  for (size_t i = linears_.size(); i-- > 0;) {
    auto& lin = linears_[i];
    const torch::Tensor& a = inputs[i];
    write(
        2 * i, lin->weight, [&](torch::Tensor& w) { at::mm_out(w, g.t(), a); },
        [&](torch::Tensor& w) { w.addmm_(g.t(), a); });
    write(
        2 * i + 1, lin->bias, [&](torch::Tensor& b) { at::sum_out(b, g, {0}); },
        [&](torch::Tensor& b) { b.add_(g.sum(0)); });
    if (i == 0) break;
    g = g.mm(lin->weight);
    // Derivative of the activation, from its output a = inputs[i].
    if (act == "relu") {
      g.mul_(a.gt(0));
    } else if (act == "tanh") {
      g.mul_(1 - a * a);
    } else {
      g.mul_(a * (1 - a));
    }
  }
  return {loss, logits};
}

void MlpImpl::pretty_print(std::ostream& stream) const {
  stream << "dtrain::Mlp(" << options.in_features();
  for (int64_t h : options.hidden()) stream << "-" << h;
  stream << "-" << options.classes() << ", " << options.activation() << ")";
}

}  // namespace dtrain::models
