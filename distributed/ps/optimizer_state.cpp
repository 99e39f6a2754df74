#include "distributed/ps/optimizer_state.h"

#include <c10/util/string_utils.h>
#include <torch/optim/adam.h>
#include <torch/optim/sgd.h>

#include "core/errors.h"

namespace dtrain::distributed::ps {

namespace {

std::string key_of(const torch::Tensor& p) { return c10::guts::to_string(p.unsafeGetTensorImpl()); }

}  // namespace

FlatOptimizerState flatten_state(torch::optim::Optimizer& optimizer,
                                 const std::vector<torch::Tensor>& params) {
  FlatOptimizerState out;
  auto& state = optimizer.state();
  std::map<std::string, std::vector<torch::Tensor>> parts;
  for (const auto& p : params) {
    auto it = state.find(key_of(p));
    if (it == state.end()) return {};  // no state yet: all or nothing
    if (auto* sgd = dynamic_cast<torch::optim::SGDParamState*>(it->second.get())) {
      parts["momentum_buffer"].push_back(sgd->momentum_buffer().reshape(-1));
    } else if (auto* adam = dynamic_cast<torch::optim::AdamParamState*>(it->second.get())) {
      parts["exp_avg"].push_back(adam->exp_avg().reshape(-1));
      parts["exp_avg_sq"].push_back(adam->exp_avg_sq().reshape(-1));
      out.step = adam->step();
    }
  }
  for (auto& [name, list] : parts) out.slots[name] = torch::cat(list).clone();
  return out;
}

void unflatten_state(torch::optim::Optimizer& optimizer, const std::vector<torch::Tensor>& params,
                     const FlatOptimizerState& flat) {
  if (flat.slots.empty()) return;
  auto& state = optimizer.state();
  int64_t offset = 0;
  for (const auto& p : params) {
    auto piece = [&](const std::string& slot) {
      return flat.slots.at(slot).narrow(0, offset, p.numel()).reshape(p.sizes()).clone();
    };
    if (flat.slots.count("momentum_buffer")) {
      auto s = std::make_unique<torch::optim::SGDParamState>();
      s->momentum_buffer(piece("momentum_buffer"));
      state[key_of(p)] = std::move(s);
    } else {
      auto s = std::make_unique<torch::optim::AdamParamState>();
      s->step(flat.step);
      s->exp_avg(piece("exp_avg"));
      s->exp_avg_sq(piece("exp_avg_sq"));
      state[key_of(p)] = std::move(s);
    }
    offset += p.numel();
  }
}

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const nlohmann::json& c,
                                                        const std::vector<torch::Tensor>& params) {
  const std::string name = c.at("optimizer");
  const double lr = c.at("learning_rate"), wd = c.at("weight_decay");
  if (name == "sgd") {
    return std::make_unique<torch::optim::SGD>(
        params, torch::optim::SGDOptions(lr).momentum(c.at("momentum").get<double>()).weight_decay(wd));
  }
  if (name == "adam") {
    return std::make_unique<torch::optim::Adam>(params, torch::optim::AdamOptions(lr).weight_decay(wd));
  }
  throw ConfigError("optimizer '" + name + "' is not supported (expected sgd or adam)");
}

}  // namespace dtrain::distributed::ps
