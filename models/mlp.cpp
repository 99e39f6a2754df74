#include "models/mlp.h"

#include <torch/nn/modules/activation.h>

#include "core/errors.h"
#include "core/thread_team.h"

namespace dtrain::models {

namespace {

/// g *= activation'(a), from the activation's output a.
void times_activation_derivative(torch::Tensor& g, const torch::Tensor& a, const std::string& act) {
  if (act == "relu") {
    g.mul_(a.gt(0));
  } else if (act == "tanh") {
    g.mul_(1 - a * a);
  } else {
    g.mul_(a * (1 - a));
  }
}

void activate(torch::Tensor& x, const std::string& act) {
  if (act == "relu") {
    x.relu_();
  } else if (act == "tanh") {
    x.tanh_();
  } else {
    x.sigmoid_();
  }
}

}  // namespace

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
    if (i + 1 < linears_.size()) activate(x, act);
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
    times_activation_derivative(g, a, act);  // from its output a = inputs[i]
  }
  return {loss, logits};
}

std::pair<torch::Tensor, torch::Tensor> MlpImpl::train_step_team(const torch::Tensor& x,
                                                                 const torch::Tensor& targets,
                                                                 double loss_scale, bool accumulate,
                                                                 ThreadTeam& team) {
  torch::NoGradGuard no_grad;
  const std::string act = options.activation();
  const size_t layers = linears_.size();
  const int members = team.size();
  const int64_t batch = x.size(0);
  // acts[l]: the input of layer l (acts[0] = x); acts[layers]: the logits. parts[l][k]: member
  // k's share of the gradient of layer l's input.
  std::vector<torch::Tensor> acts(layers + 1);
  std::vector<std::vector<torch::Tensor>> parts(layers);
  acts[0] = x;
  for (size_t l = 0; l < layers; ++l) {
    const auto& w = linears_[l]->weight;
    TORCH_CHECK(w.grad().defined() && linears_[l]->bias.grad().defined(),
                "train_step_team: parameter gradients must exist");
    acts[l + 1] = torch::empty({batch, w.size(0)}, x.options());
    if (l > 0) {
      for (int k = 0; k < members; ++k)
        parts[l].push_back(torch::empty({batch, w.size(1)}, x.options()));
    }
  }
  const auto rows = [members](int64_t n, int k) { return block_of(n, k, members); };
  torch::Tensor loss;
  team.run([&](int k) {
    // Forward: this member's output columns of every layer, then wait for the others'.
    for (size_t l = 0; l < layers; ++l) {
      const auto& lin = linears_[l];
      const auto [r0, r1] = rows(lin->weight.size(0), k);
      if (r1 > r0) {
        torch::Tensor out = acts[l + 1].narrow(1, r0, r1 - r0);
        at::addmm_out(out, lin->bias.narrow(0, r0, r1 - r0), acts[l],
                      lin->weight.narrow(0, r0, r1 - r0).t());
        if (l + 1 < layers) activate(out, act);
      }
      team.barrier();
    }
    // d(mean CE)/d(logits) = (softmax - onehot) / batch: small, computed by every member alike
    // (so a bad target fails on all of them, before any waits on another).
    const torch::Tensor log_probs = torch::log_softmax(acts[layers], 1);
    torch::Tensor g_full = log_probs.exp();
    g_full.scatter_add_(1, targets.unsqueeze(1), torch::full({batch, 1}, -1.0, g_full.options()));
    g_full.mul_(loss_scale / static_cast<double>(batch));
    if (k == 0) loss = torch::nll_loss(log_probs, targets);
    auto [c0, c1] = rows(g_full.size(1), k);
    torch::Tensor g = g_full.narrow(1, c0, c1 - c0);
    for (size_t l = layers; l-- > 0;) {
      const auto& lin = linears_[l];
      const auto [r0, r1] = rows(lin->weight.size(0), k);
      const int64_t n = r1 - r0;
      const torch::Tensor& a = acts[l];
      if (n > 0) {
        torch::Tensor gw = lin->weight.mutable_grad().narrow(0, r0, n);
        torch::Tensor gb = lin->bias.mutable_grad().narrow(0, r0, n);
        if (accumulate) {
          gw.addmm_(g.t(), a);
          gb.add_(g.sum(0));
        } else {
          at::mm_out(gw, g.t(), a);
          at::sum_out(gb, g, {0});
        }
      }
      if (l == 0) break;
      torch::Tensor& part = parts[l][static_cast<size_t>(k)];
      if (n > 0) {
        at::mm_out(part, g, lin->weight.narrow(0, r0, n));
      } else {
        part.zero_();
      }
      team.barrier();
      // This member's columns of the previous layer's output gradient, summed in member order.
      const auto [p0, p1] = rows(a.size(1), k);
      torch::Tensor mine = parts[l][0].narrow(1, p0, p1 - p0).clone();
      for (int j = 1; j < members; ++j)
        mine.add_(parts[l][static_cast<size_t>(j)].narrow(1, p0, p1 - p0));
      times_activation_derivative(mine, a.narrow(1, p0, p1 - p0), act);
      g = mine;
    }
  });
  return {loss, acts[layers]};
}

void MlpImpl::pretty_print(std::ostream& stream) const {
  stream << "dtrain::Mlp(" << options.in_features();
  for (int64_t h : options.hidden()) stream << "-" << h;
  stream << "-" << options.classes() << ", " << options.activation() << ")";
}

}  // namespace dtrain::models
