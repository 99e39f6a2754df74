#include "tools/workspace_flags.h"

#include <spdlog/spdlog.h>

#include <cstdlib>

#include "core/errors.h"
#include "core/option_table.h"
#include "tools/tracking/model_registry.h"

namespace dtrain::cli {
namespace fs = std::filesystem;

void add_workspace_flag(cxxopts::Options& options) {
  options.add_options()("workspace", "workspace folder (env DTRAIN_WORKSPACE)",
                        cxxopts::value<std::string>());
}

fs::path workspace_flag(const cxxopts::ParseResult& r) {
  const ConfigOption& row = *find_run_option("workspace");
  std::string path = row.default_text;
  if (const char* env = std::getenv(row.env.c_str()); env != nullptr && *env != '\0') path = env;
  if (r.count("workspace")) path = r["workspace"].as<std::string>();
  if (path.empty() || path == "none") {
    throw ConfigError("--workspace: expected the folder of a workspace, got '" + path + "'");
  }
  return path;
}

void check_download_folder(const fs::path& dir) {
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec)) {
    throw ConfigError("--to " + dir.string() + ": exists and is not a folder");
  }
}

ModelPath::ModelPath(const std::string& text, const cxxopts::ParseResult& r) : path_(text) {
  if (!tracking::is_model_uri(text)) return;
  const tracking::ModelRef ref = tracking::parse_model_ref(text);
  tracking::Workspace ws(workspace_flag(r), /*create=*/false);
  tracking::ModelRegistry registry(ws);
  const tracking::ModelVersion version = registry.resolve(ref);
  tmp_ = std::make_unique<ScopedTempDir>(fs::temp_directory_path(), "dtrain-model-");
  registry.download(version, tmp_->path(), /*force=*/true);
  path_ = tmp_->path();
  spdlog::info("{} is {} version {} (files verified by SHA-256)", text, version.name,
               version.version);
}

}  // namespace dtrain::cli
