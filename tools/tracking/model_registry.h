// The model registry of a workspace: named models with versions 1, 2, 3..., tags, aliases
// (`production`), and files kept in the workspace's content-addressed artifact store. MLflow's
// registry is the reference (`models:/NAME/VERSION`, `models:/NAME@ALIAS`).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tools/tracking/workspace.h"

namespace dtrain::tracking {

/// NAME, NAME:VERSION, NAME@ALIAS, models:/NAME/VERSION, models:/NAME@ALIAS, models:/NAME/latest.
struct ModelRef {
  std::string name;
  std::optional<int64_t> version;  ///< neither version nor alias: the latest version
  std::string alias;
  std::string text;  ///< as the user wrote it, for messages
};

/// Parses a reference; throws ConfigError naming `text` and the accepted forms.
ModelRef parse_model_ref(const std::string& text);
/// True for text that starts with "models:/".
bool is_model_uri(const std::string& text);

struct ModelFile {
  std::string path;  ///< model.pt, model.json, model.onnx
  std::string sha256;
  int64_t size = 0;
};

struct ModelVersion {
  std::string name;
  int64_t version = 0;
  std::string run_id;  ///< empty when registered from a folder
  std::string source;  ///< the run's artifact path or the folder it came from
  std::string description;
  double created = 0;
  std::string creator;  ///< user@host
  nlohmann::json architecture;
  nlohmann::json metrics;
  nlohmann::json config;
  std::vector<ModelFile> files;
  std::vector<std::string> aliases;
  std::map<std::string, std::string> tags;
};

struct RegisterOptions {
  std::string name;
  std::string run_id;  ///< the source run ("" for a plain folder)
  std::string source;  ///< where the files came from (shown by `model show`)
  std::map<std::string, std::string> tags;
  std::string description;
  nlohmann::json run_metrics;  ///< the run's final metrics (null: model.json's)
};

class ModelRegistry {
 public:
  explicit ModelRegistry(Workspace& workspace) : ws_(workspace) {}

  /// Checks that `dir` holds a dtrain model (model.json that describes model.pt's weights;
  /// model.onnx if present), stores its files and records the next version of `name` in one
  /// transaction. Returns the version. DataError naming the file for a folder that is not a
  /// model; ConfigError for a bad name.
  int64_t register_model(const std::filesystem::path& dir, const RegisterOptions& options);

  /// Registers the model files a tracked run stored under `prefix` (e.g. "model", or
  /// "outputs/model" as the run saw it), verified by SHA-256; the version records the run and its
  /// final metrics. DataError when the run stored no model there.
  int64_t register_from_run(const std::string& run_id, std::string prefix, RegisterOptions options);

  /// Registered model names, sorted.
  std::vector<std::string> names();
  /// All versions of `name`, oldest first; ConfigError listing the names if there is none.
  std::vector<ModelVersion> versions(const std::string& name);
  /// The version `ref` names; ConfigError listing what exists when it names nothing.
  ModelVersion resolve(const ModelRef& ref);

  /// Points `alias` at `version` (moving it if it pointed elsewhere).
  void set_alias(const std::string& name, int64_t version, const std::string& alias);
  void delete_alias(const std::string& name, const std::string& alias);
  void set_tags(const std::string& name, int64_t version,
                const std::map<std::string, std::string>& tags);
  void delete_tag(const std::string& name, int64_t version, const std::string& key);
  /// Removes the version and the aliases that point at it (the version number is not reused).
  void delete_version(const std::string& name, int64_t version);

  /// Writes the version's files into `dir` atomically after verifying every SHA-256 (DataError
  /// naming a missing or altered stored file; nothing is written then). An existing file in
  /// `dir` with other content is a ConfigError unless `force`. Returns the paths written.
  std::vector<std::filesystem::path> download(const ModelVersion& version,
                                              const std::filesystem::path& dir, bool force);

 private:
  void require_version(const std::string& name, int64_t version);
  Workspace& ws_;
};

/// Checks a model name (letters, digits, '.', '_', '-'; at most 128) and an alias (a letter
/// first; not "latest"); ConfigError naming the flag otherwise.
void check_model_name(const std::string& name);
void check_alias(const std::string& alias);

}  // namespace dtrain::tracking
