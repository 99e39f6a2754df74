#include "core/fused_sgd.h"

#include <c10/util/string_utils.h>
#include <torch/optim/sgd.h>

namespace dtrain {

namespace {

bool eligible(torch::optim::SGD& sgd) {
  for (auto& group : sgd.param_groups()) {
    const auto& o = static_cast<const torch::optim::SGDOptions&>(group.options());
    if (o.nesterov() || o.dampening() != 0) return false;
    for (const auto& p : group.params()) {
      if (!p.device().is_cpu() || p.scalar_type() != torch::kFloat || !p.is_contiguous()) return false;
      const auto& g = p.grad();
      if (g.defined() && (!g.device().is_cpu() || g.scalar_type() != torch::kFloat || !g.is_contiguous()))
        return false;
    }
  }
  return true;
}

}  // namespace

bool fused_sgd_step(torch::optim::Optimizer& optimizer) {
  auto* sgd = dynamic_cast<torch::optim::SGD*>(&optimizer);
  if (sgd == nullptr || !eligible(*sgd)) return false;
  torch::NoGradGuard no_grad;
  auto& state = sgd->state();
  for (auto& group : sgd->param_groups()) {
    const auto& o = static_cast<const torch::optim::SGDOptions&>(group.options());
    const float lr = static_cast<float>(o.lr()), m = static_cast<float>(o.momentum()),
                wd = static_cast<float>(o.weight_decay());
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      float* __restrict w = p.data_ptr<float>();
      const float* __restrict g = p.grad().data_ptr<float>();
      const int64_t n = p.numel();
      if (m == 0) {
        for (int64_t i = 0; i < n; ++i) w[i] -= lr * (g[i] + wd * w[i]);
        continue;
      }
      const std::string key = c10::guts::to_string(p.unsafeGetTensorImpl());
      auto it = state.find(key);
      if (it == state.end()) {  // first step: the buffer starts as the gradient (as torch does)
        auto s = std::make_unique<torch::optim::SGDParamState>();
        s->momentum_buffer(torch::empty_like(p));
        float* __restrict b = s->momentum_buffer().data_ptr<float>();
        for (int64_t i = 0; i < n; ++i) {
          b[i] = g[i] + wd * w[i];
          w[i] -= lr * b[i];
        }
        state[key] = std::move(s);
        continue;
      }
      auto& buf = static_cast<torch::optim::SGDParamState&>(*it->second).momentum_buffer();
      float* __restrict b = buf.data_ptr<float>();
      for (int64_t i = 0; i < n; ++i) {
        b[i] = m * b[i] + (g[i] + wd * w[i]);
        w[i] -= lr * b[i];
      }
    }
  }
  return true;
}

}  // namespace dtrain
