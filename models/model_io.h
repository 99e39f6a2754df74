// The trained model on disk: outputs/model/{model.pt, model.json}.
#pragma once

#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/model.h"
#include "core/run_config.h"

namespace dtrain::models {

/// Writes `dir`/model.pt (weights, same archive format as checkpoints, no optimizer state) and
/// `dir`/model.json (architecture, config, metrics, parameter shapes). Both atomically.
void save_model_dir(const std::filesystem::path& dir, const Model& model, const RunConfig& config,
                    const nlohmann::json& metrics);

struct LoadedModel {
  Model model;
  RunConfig config;
  nlohmann::json metrics;
};

/// Checks that `dir` is a dtrain model folder: model.json is a "dtrain-model-v1" object whose
/// weights file is model.pt in the same folder and whose architecture and parameter shapes are
/// those of the weights. Returns model.json. Throws DataError naming the file at fault.
nlohmann::json check_model_dir(const std::filesystem::path& dir);

/// Loads a model folder (with model.pt; its model.json is checked when present), a model.pt file
/// or a training checkpoint. Builds the
/// architecture recorded inside and loads its weights. Throws CheckpointError/DataError.
LoadedModel load_model(const std::filesystem::path& path);

}  // namespace dtrain::models
