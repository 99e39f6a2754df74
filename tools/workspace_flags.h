// What several commands share about the workspace: the --workspace flag (env DTRAIN_WORKSPACE)
// and model paths that may be registry URIs (models:/NAME/VERSION, models:/NAME@ALIAS).
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include <cxxopts.hpp>

#include "core/file_util.h"

namespace dtrain::cli {

/// Declares --workspace on `options`.
void add_workspace_flag(cxxopts::Options& options);

/// --workspace, else $DTRAIN_WORKSPACE, else the default; ConfigError for "none" or empty.
std::filesystem::path workspace_flag(const cxxopts::ParseResult& result);

/// `--to DIR` of a download: ConfigError if it exists and is not a folder.
void check_download_folder(const std::filesystem::path& dir);

/// A model path as given, or a registered model downloaded (verified) into a temporary folder
/// that lives as long as this object.
class ModelPath {
 public:
  /// `text` is a folder/file path or a models:/ URI resolved in `result`'s workspace.
  ModelPath(const std::string& text, const cxxopts::ParseResult& result);
  const std::filesystem::path& path() const { return path_; }

 private:
  std::unique_ptr<ScopedTempDir> tmp_;
  std::filesystem::path path_;
};

}  // namespace dtrain::cli
