#include "core/optimizers.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/serialize/archive.h>

#include <cmath>
#include <functional>

#include "core/errors.h"
#include "core/option_table.h"
#include "core/run_config.h"
#include "core/thread_team.h"

namespace dtrain {

namespace {

bool plain_cpu_float(const torch::Tensor& t) {
  return t.device().is_cpu() && t.scalar_type() == torch::kFloat && t.is_contiguous();
}

/// SGD with momentum and weight decay, as torch::optim::SGD (no dampening, no Nesterov). On
/// contiguous CPU float tensors the step is one pass per parameter (torch's makes three).
class Sgd final : public Optimizer {
 public:
  using Optimizer::Optimizer;

  std::vector<std::string> slot_names() const override {
    if (settings_.momentum == 0) return {};
    return {"momentum_buffer"};
  }

  MemberStep begin_member_step() override {
    for (const auto& p : params_) {
      if (!plain_cpu_float(p) || (p.grad().defined() && !plain_cpu_float(p.grad()))) return {};
    }
    const bool first = start_momentum();
    std::vector<torch::Tensor>* bufs = momentum_buffers();
    ++step_;
    const double lr = settings_.learning_rate, m = settings_.momentum, wd = settings_.weight_decay;
    return [this, bufs, first, lr, m, wd](int member, int members) {
      for (size_t i = 0; i < params_.size(); ++i) {
        const torch::Tensor& g = params_[i].grad();
        if (!g.defined()) continue;
        const auto [begin, end] = member_rows(params_[i], member, members);
        fused_step(params_[i], g, bufs != nullptr ? &(*bufs)[i] : nullptr, first, lr, m, wd, begin,
                   end);
      }
    };
  }

 protected:
  void whole_step() override {
    torch::NoGradGuard no_grad;
    const double lr = settings_.learning_rate, m = settings_.momentum, wd = settings_.weight_decay;
    const bool first = start_momentum();
    std::vector<torch::Tensor>* bufs = momentum_buffers();
    for (size_t i = 0; i < params_.size(); ++i) {
      torch::Tensor& p = params_[i];
      const torch::Tensor g = p.grad();
      if (!g.defined()) continue;
      torch::Tensor d = wd != 0 ? g.add(p, wd) : g;
      if (bufs != nullptr) {
        torch::Tensor& buf = (*bufs)[i];
        if (first) {
          buf.copy_(d);
        } else {
          buf.mul_(m).add_(d);
        }
        d = buf;
      }
      p.add_(d, -lr);
    }
    ++step_;
  }

 private:
  /// Creates the momentum buffers on the first step (true then: each starts as the gradient, as
  /// torch's do).
  bool start_momentum() {
    if (settings_.momentum == 0 || !slots_.empty()) return false;
    auto& bufs = slots_["momentum_buffer"];
    for (const auto& p : params_) bufs.push_back(torch::zeros_like(p));
    return true;
  }
  std::vector<torch::Tensor>* momentum_buffers() {
    return settings_.momentum == 0 ? nullptr : &slots_["momentum_buffer"];
  }

  /// Elements [begin, end) of one parameter, in one pass.
  static void fused_step(torch::Tensor& p, const torch::Tensor& grad, torch::Tensor* buf,
                         bool first, double lr_d, double m_d, double wd_d, int64_t begin,
                         int64_t end) {
    const float lr = static_cast<float>(lr_d), m = static_cast<float>(m_d),
                wd = static_cast<float>(wd_d);
    float* __restrict w = p.data_ptr<float>() + begin;
    const float* __restrict g = grad.data_ptr<float>() + begin;
    const int64_t n = end - begin;
    if (buf == nullptr) {
      for (int64_t i = 0; i < n; ++i) w[i] -= lr * (g[i] + wd * w[i]);
      return;
    }
    float* __restrict b = buf->data_ptr<float>() + begin;
    if (first) {
      for (int64_t i = 0; i < n; ++i) {
        b[i] = g[i] + wd * w[i];
        w[i] -= lr * b[i];
      }
      return;
    }
    for (int64_t i = 0; i < n; ++i) {
      b[i] = m * b[i] + (g[i] + wd * w[i]);
      w[i] -= lr * b[i];
    }
  }
};

/// Adam as torch::optim::Adam with its defaults (betas 0.9/0.999, eps 1e-8, no amsgrad).
class Adam final : public Optimizer {
 public:
  using Optimizer::Optimizer;

  std::vector<std::string> slot_names() const override { return {"exp_avg", "exp_avg_sq"}; }

  MemberStep begin_member_step() override {
    if (slots_.empty()) {
      for (const auto& p : params_) {
        slots_["exp_avg"].push_back(torch::zeros_like(p));
        slots_["exp_avg_sq"].push_back(torch::zeros_like(p));
      }
    }
    ++step_;
    return [this, step = static_cast<double>(step_), lr = settings_.learning_rate,
            wd = settings_.weight_decay](int member, int members) {
      torch::NoGradGuard no_grad;
      constexpr double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
      const double bias_correction1 = 1 - std::pow(beta1, step);
      const double bias_correction2 = 1 - std::pow(beta2, step);
      const double step_size = lr / bias_correction1;
      const std::vector<torch::Tensor>& avg = slots_.at("exp_avg");
      const std::vector<torch::Tensor>& avg_sq = slots_.at("exp_avg_sq");
      // Elementwise: the same result however the elements are split.
      for (size_t i = 0; i < params_.size(); ++i) {
        const torch::Tensor& full_grad = params_[i].grad();
        if (!full_grad.defined()) continue;
        // Not a structured binding: C++17 lambdas cannot capture one (clang refuses).
        const std::pair<int64_t, int64_t> range = member_rows(params_[i], member, members);
        const int64_t begin = range.first, end = range.second;
        const auto part = [&](const torch::Tensor& t) {
          return t.view(-1).narrow(0, begin, end - begin);
        };
        torch::Tensor p = part(params_[i]);
        torch::Tensor grad = part(full_grad);
        if (wd != 0) grad = grad.add(p, wd);
        torch::Tensor exp_avg = part(avg[i]);
        torch::Tensor exp_avg_sq = part(avg_sq[i]);
        exp_avg.mul_(beta1).add_(grad, 1 - beta1);
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2);
        const torch::Tensor denom = (exp_avg_sq.sqrt() / std::sqrt(bias_correction2)).add_(eps);
        p.addcdiv_(exp_avg, denom, -step_size);
      }
    };
  }

 protected:
  void whole_step() override { begin_member_step()(0, 1); }
};

using Factory =
    std::function<std::unique_ptr<Optimizer>(const OptimizerSettings&, std::vector<torch::Tensor>)>;

template <class Kind>
Factory factory() {
  return [](const OptimizerSettings& s, std::vector<torch::Tensor> params) {
    return std::unique_ptr<Optimizer>(new Kind(s, std::move(params)));
  };
}

/// Every optimizer dtrain has: adding one is a class above and a row here.
const std::vector<std::pair<std::string, Factory>>& registry() {
  static const std::vector<std::pair<std::string, Factory>> kinds = {
      {"sgd", factory<Sgd>()},
      {"adam", factory<Adam>()},
  };
  return kinds;
}

std::string slot_key(const std::string& slot, size_t index) {
  return slot + "/" + std::to_string(index);
}

}  // namespace

OptimizerSettings OptimizerSettings::from(const RunConfig& c) {
  return {c.optimizer, c.learning_rate, c.momentum, c.weight_decay};
}

nlohmann::json OptimizerSettings::to_json() const {
  return {{"optimizer", name},
          {"learning_rate", learning_rate},
          {"momentum", momentum},
          {"weight_decay", weight_decay}};
}

OptimizerSettings OptimizerSettings::from_json(const nlohmann::json& j) {
  OptimizerSettings s;
  try {
    s.name = j.at("optimizer").get<std::string>();
    s.learning_rate = j.at("learning_rate").get<double>();
    s.momentum = j.at("momentum").get<double>();
    s.weight_decay = j.at("weight_decay").get<double>();
  } catch (const nlohmann::json::exception& e) {
    throw ConfigError(std::string("optimizer settings: expected {optimizer, learning_rate, "
                                  "momentum, weight_decay}: ") +
                      e.what());
  }
  return s;
}

Optimizer::Optimizer(OptimizerSettings settings, std::vector<torch::Tensor> params)
    : settings_(std::move(settings)), params_(std::move(params)) {}

void Optimizer::step() {
  const MemberStep member_step = begin_member_step();
  if (!member_step) {
    whole_step();
  } else if (team_ == nullptr || team_->size() == 1) {
    member_step(0, 1);
  } else {
    team_->run([&](int k) { member_step(k, team_->size()); });
  }
}

void Optimizer::zero_grad() {
  for (auto& p : params_) {
    torch::Tensor& g = p.mutable_grad();
    if (g.defined()) {
      g.detach_();
      g.zero_();
    }
  }
}

FlatOptimizerState Optimizer::flatten() const {
  FlatOptimizerState flat;
  flat.step = step_;
  for (const auto& [slot, tensors] : slots_) {
    std::vector<torch::Tensor> parts;
    for (const auto& t : tensors) parts.push_back(t.detach().reshape(-1).cpu());
    flat.slots[slot] = torch::cat(parts);
  }
  return flat;
}

void Optimizer::unflatten(const FlatOptimizerState& flat) {
  torch::NoGradGuard no_grad;
  // Everything is checked before anything is replaced: a refused state leaves this one intact.
  const std::vector<std::string> names = slot_names();
  std::vector<std::string> have;
  for (const auto& [name, t] : flat.slots) {
    if (std::find(names.begin(), names.end(), name) == names.end()) {
      throw DataError("optimizer state: slot '" + name + "' is not kept by " + settings_.name);
    }
    have.push_back("'" + name + "'");
  }
  int64_t total = 0;
  for (const auto& p : params_) total += p.numel();
  std::map<std::string, std::vector<torch::Tensor>> slots;
  for (const auto& name : names) {
    if (flat.slots.empty()) break;  // no state yet
    auto it = flat.slots.find(name);
    if (it == flat.slots.end()) {
      throw DataError("optimizer state: " + settings_.name + " needs slot '" + name +
                      "' but the state has " + fmt::format("{}", fmt::join(have, ", ")));
    }
    if (it->second.dim() != 1 || it->second.numel() != total) {
      throw DataError("optimizer state: slot '" + name + "' has " +
                      std::to_string(it->second.numel()) + " elements but the parameters have " +
                      std::to_string(total));
    }
    int64_t offset = 0;
    for (const auto& p : params_) {
      slots[name].push_back(
          it->second.narrow(0, offset, p.numel()).reshape(p.sizes()).to(p.options()).clone());
      offset += p.numel();
    }
  }
  step_ = flat.step;
  slots_ = std::move(slots);
}

void Optimizer::save(torch::serialize::OutputArchive& archive) const {
  archive.write("step", torch::tensor(step_, torch::kLong));
  for (const auto& [slot, tensors] : slots_) {
    for (size_t i = 0; i < tensors.size(); ++i) {
      archive.write(slot_key(slot, i), tensors[i].detach().cpu());
    }
  }
}

void Optimizer::load(torch::serialize::InputArchive& archive) {
  torch::NoGradGuard no_grad;
  torch::Tensor step;
  if (!archive.try_read("step", step) || step.numel() != 1) {
    throw DataError("optimizer state: no 'step' entry (not written by this dtrain's " +
                    settings_.name + ")");
  }
  std::map<std::string, std::vector<torch::Tensor>> slots;
  for (const auto& name : slot_names()) {
    for (size_t i = 0; i < params_.size(); ++i) {
      torch::Tensor t;
      if (!archive.try_read(slot_key(name, i), t)) {
        if (i == 0) break;  // no state yet (saved before the first step)
        throw DataError("optimizer state: missing '" + slot_key(name, i) + "'");
      }
      if (t.sizes() != params_[i].sizes()) {
        throw DataError("optimizer state: '" + slot_key(name, i) +
                        "' does not have the shape of parameter " + std::to_string(i));
      }
      slots[name].push_back(t.to(params_[i].options()));
    }
  }
  if (!slots.empty() && slots.size() != slot_names().size()) {
    throw DataError("optimizer state: some slots of " + settings_.name + " are missing");
  }
  step_ = step.item<int64_t>();
  slots_ = std::move(slots);
}

std::unique_ptr<Optimizer> make_optimizer(const OptimizerSettings& settings,
                                          std::vector<torch::Tensor> params) {
  for (const auto& [name, make] : registry()) {
    if (name == settings.name) return make(settings, std::move(params));
  }
  throw ConfigError("--optimizer: expected " + join_alternatives(optimizer_names()) + ", got " +
                    settings.name);
}

std::vector<std::string> optimizer_names() {
  std::vector<std::string> names;
  for (const auto& [name, make] : registry()) names.push_back(name);
  return names;
}

}  // namespace dtrain
