// Models by name: new models plug in here without touching the trainer.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "core/model.h"
#include "core/run_config.h"

namespace dtrain::models {

/// Input and output sizes the data set dictates.
struct DataShape {
  int64_t features = 784;
  int64_t classes = 10;
};

using ModelFactory = std::function<Model(const RunConfig&, const DataShape&)>;

/// Registers a factory under `name` (call at start-up, before build_model).
void register_model(const std::string& name, ModelFactory factory);

/// Builds the model config.model names. Throws ConfigError listing the known names.
Model build_model(const RunConfig& config, const DataShape& shape = {});

std::vector<std::string> model_names();

}  // namespace dtrain::models
