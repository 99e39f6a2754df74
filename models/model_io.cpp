#include "models/model_io.h"

#include <torch/nn/module.h>

#include "core/checkpoint.h"
#include "core/errors.h"
#include "core/file_util.h"
#include "models/registry.h"

namespace dtrain::models {
namespace fs = std::filesystem;

namespace {

DataShape shape_of(const nlohmann::json& spec) {
  DataShape s;
  s.features = spec.value("in_features", int64_t{784});
  s.classes = spec.value("classes", int64_t{10});
  return s;
}

}  // namespace

void save_model_dir(const fs::path& dir, const Model& model, const RunConfig& config,
                    const nlohmann::json& metrics) {
  CheckpointMeta meta;
  meta.config = config.to_json();
  meta.model = model.spec;
  meta.extra = {{"metrics", metrics}};
  save_checkpoint(dir / "model.pt", *model.module, nullptr, meta);

  nlohmann::json params = nlohmann::json::array();
  for (const auto& p : model.module->named_parameters(true)) {
    params.push_back({{"name", p.key()}, {"shape", p.value().sizes().vec()}});
  }
  nlohmann::json j = {{"format", "dtrain-model-v1"},
                      {"architecture", model.spec},
                      {"input",
                       {{"name", "input"},
                        {"shape", {"batch", model.spec.value("in_features", 784)}},
                        {"dtype", "float32"},
                        {"scale", "pixel / 255"}}},
                      {"parameters", params},
                      {"config", config.to_json()},
                      {"metrics", metrics},
                      {"weights", "model.pt"}};
  write_file_atomic(dir / "model.json", j.dump(2) + "\n");
}

LoadedModel load_model(const fs::path& path) {
  std::error_code ec;
  fs::path file = path;
  if (fs::is_directory(path, ec)) {
    file = path / "model.pt";
    if (!fs::is_regular_file(file, ec)) {
      // A checkpoints folder also works: take the newest checkpoint.
      file = resolve_checkpoint(path);
    }
  }
  const CheckpointMeta meta = read_checkpoint_meta(file);
  LoadedModel out;
  try {
    out.config = RunConfig::from_json(meta.config);
  } catch (const ConfigError& e) {
    throw CheckpointError(file.string() + ": " + e.what());
  }
  out.model = build_model(out.config, shape_of(meta.model));
  if (out.model.spec != meta.model) {
    throw CheckpointError(file.string() + ": recorded architecture " + meta.model.dump() +
                          " does not match its configuration " + out.model.spec.dump());
  }
  load_checkpoint(file, *out.model.module, nullptr, /*restore_rng=*/false);
  out.metrics = meta.extra.value("metrics", nlohmann::json::object());
  return out;
}

}  // namespace dtrain::models
