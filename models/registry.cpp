#include "models/registry.h"

#include <fmt/ranges.h>
#include <map>
#include <mutex>

#include "core/errors.h"
#include "models/mlp.h"

namespace dtrain::models {

namespace {

Model make_mlp(const RunConfig& config, const DataShape& shape) {
  Mlp mlp(
      MlpOptions(shape.features, config.hidden_sizes, shape.classes).activation(config.activation));
  Model m;
  m.module = mlp.ptr();
  m.forward = [mlp](const torch::Tensor& x) mutable { return mlp->forward(x); };
  m.train_step = [mlp](const torch::Tensor& x, const torch::Tensor& y, double scale,
                       bool accumulate, const std::vector<torch::Tensor>& grads) mutable {
    return mlp->train_step(x, y, scale, accumulate, grads);
  };
  m.team_step = [mlp](const Batch& batch, double scale, bool accumulate, ThreadTeam& team,
                      const MemberStep& then) mutable {
    return mlp->train_step_team(batch.inputs, batch.rows, batch.input_scale, batch.targets, scale,
                                accumulate, team, then);
  };
  m.spec = config.model_json();
  m.spec["in_features"] = shape.features;
  m.spec["classes"] = shape.classes;
  return m;
}

struct Registry {
  std::mutex mutex;
  std::map<std::string, ModelFactory> factories = {{"mlp", make_mlp}};
};

Registry& registry() {
  static Registry r;
  return r;
}

}  // namespace

void register_model(const std::string& name, ModelFactory factory) {
  std::lock_guard<std::mutex> lock(registry().mutex);
  registry().factories[name] = std::move(factory);
}

std::vector<std::string> model_names() {
  std::lock_guard<std::mutex> lock(registry().mutex);
  std::vector<std::string> names;
  for (const auto& kv : registry().factories) names.push_back(kv.first);
  return names;
}

Model build_model(const RunConfig& config, const DataShape& shape) {
  ModelFactory factory;
  {
    std::lock_guard<std::mutex> lock(registry().mutex);
    auto it = registry().factories.find(config.model);
    if (it != registry().factories.end()) factory = it->second;
  }
  if (!factory) {
    const std::string known = fmt::format("{}", fmt::join(model_names(), ", "));
    throw ConfigError("--model: unknown model '" + config.model + "' (known: " + known + ")");
  }
  return factory(config, shape);
}

}  // namespace dtrain::models
