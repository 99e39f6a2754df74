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
  const auto field = [&](const char* key, int64_t fallback) {
    if (!spec.is_object() || !spec.contains(key)) return fallback;
    const auto& v = spec[key];
    if (!v.is_number_integer() || v.get<int64_t>() < 1 || v.get<int64_t>() > (int64_t{1} << 24)) {
      throw DataError(std::string("model architecture: \"") + key +
                      "\" must be an integer from 1 to 16777216, got " + v.dump());
    }
    return v.get<int64_t>();
  };
  DataShape s;
  s.features = field("in_features", 784);
  s.classes = field("classes", 10);
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

namespace {

/// Largest model.json read (it holds shapes and metrics: a few KB).
constexpr uint64_t kMaxModelJsonBytes = 16u << 20;

}  // namespace

nlohmann::json check_model_dir(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    throw DataError(dir.string() +
                    ": not a model folder (expected a folder with model.json and "
                    "model.pt)");
  }
  const fs::path json_path = dir / "model.json";
  if (!fs::is_regular_file(json_path, ec)) {
    throw DataError(json_path.string() +
                    ": missing (a dtrain model folder has model.json and "
                    "model.pt)");
  }
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(json_path, kMaxModelJsonBytes));
  } catch (const nlohmann::json::exception& e) {
    throw DataError(json_path.string() + ": not valid JSON (" + e.what() + ")");
  }
  auto bad = [&](const std::string& what) { throw DataError(json_path.string() + ": " + what); };
  if (!j.is_object()) bad("expected a JSON object, got " + std::string(j.type_name()));
  if (!j.contains("format") || !j["format"].is_string() || j["format"] != "dtrain-model-v1") {
    bad("expected \"format\": \"dtrain-model-v1\"");
  }
  if (!j.contains("weights") || !j["weights"].is_string() || j["weights"] != "model.pt") {
    bad("expected \"weights\": \"model.pt\" (the weights file in the same folder)");
  }
  if (!j.contains("architecture") || !j["architecture"].is_object()) {
    bad("expected an \"architecture\" object");
  }
  if (!j.contains("parameters") || !j["parameters"].is_array()) {
    bad("expected a \"parameters\" array of {name, shape}");
  }
  const fs::path weights = dir / "model.pt";
  if (!fs::is_regular_file(weights, ec)) throw DataError(weights.string() + ": missing");
  const CheckpointMeta meta = read_checkpoint_meta(weights);
  if (meta.model != j["architecture"]) {
    bad("architecture " + j["architecture"].dump() + " differs from that of the weights in " +
        weights.string() + " (" + meta.model.dump() + ")");
  }
  return j;
}

LoadedModel load_model(const fs::path& path) {
  std::error_code ec;
  fs::path file = path;
  nlohmann::json described;
  if (fs::is_directory(path, ec)) {
    if (fs::exists(path / "model.json", ec)) described = check_model_dir(path);
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
  if (!described.is_null()) {
    // model.json must describe exactly these parameters (names and shapes, in order).
    nlohmann::json params = nlohmann::json::array();
    for (const auto& p : out.model.module->named_parameters(true)) {
      params.push_back({{"name", p.key()}, {"shape", p.value().sizes().vec()}});
    }
    if (params != described["parameters"]) {
      throw DataError((path / "model.json").string() + ": parameters " +
                      described["parameters"].dump() + " are not those of the weights " +
                      params.dump());
    }
  }
  out.metrics = meta.extra.value("metrics", nlohmann::json::object());
  return out;
}

}  // namespace dtrain::models
