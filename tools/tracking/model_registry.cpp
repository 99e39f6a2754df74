#include "tools/tracking/model_registry.h"

#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>

#include "core/errors.h"
#include "core/file_util.h"
#include "core/run_config.h"
#include "models/model_io.h"

namespace dtrain::tracking {
namespace fs = std::filesystem;

namespace {

constexpr const char* kUriPrefix = "models:/";
/// Largest model file registered (weights of the widest MLPs are a few hundred MB).
constexpr uint64_t kMaxModelFileBytes = uint64_t{4} << 30;
const std::vector<std::string> kModelFiles = {"model.json", "model.pt", "model.onnx"};

[[noreturn]] void bad_ref(const std::string& text, const std::string& why) {
  throw ConfigError("model '" + text + "': " + why +
                    " (expected NAME, NAME:VERSION, NAME@ALIAS, models:/NAME/VERSION or "
                    "models:/NAME@ALIAS)");
}

std::optional<int64_t> parse_version(const std::string& s) {
  if (s.empty() || s.size() > 12 || s.find_first_not_of("0123456789") != std::string::npos) {
    return std::nullopt;
  }
  const int64_t v = std::stoll(s);
  return v >= 1 ? std::optional<int64_t>(v) : std::nullopt;
}

std::string creator() {
  std::string user;
  if (const char* u = std::getenv("USER"); u != nullptr && *u != '\0') {
    user = u;
  } else if (const passwd* pw = ::getpwuid(::getuid()); pw != nullptr) {
    user = pw->pw_name;
  } else {
    user = std::to_string(::getuid());
  }
  return user + "@" + host_name();
}

std::string joined(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& i : items) out += (out.empty() ? "" : ", ") + i;
  return out.empty() ? "(none)" : out;
}

}  // namespace

bool is_model_uri(const std::string& text) { return text.rfind(kUriPrefix, 0) == 0; }

void check_model_name(const std::string& name) {
  if (!valid_model_name(name)) {
    throw ConfigError("model name '" + name +
                      "': expected 1 to 128 letters, digits, '.', '_' or '-', starting with a "
                      "letter or digit");
  }
}

void check_alias(const std::string& alias) {
  const bool ok = !alias.empty() && alias.size() <= 64 &&
                  std::isalpha(static_cast<unsigned char>(alias[0])) && alias != "latest" &&
                  std::all_of(alias.begin(), alias.end(), [](char c) {
                    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
                  });
  if (!ok) {
    throw ConfigError("alias '" + alias +
                      "': expected 1 to 64 letters, digits, '_' or '-', starting with a letter "
                      "(and not 'latest', which always means the newest version)");
  }
}

ModelRef parse_model_ref(const std::string& text) {
  ModelRef ref;
  ref.text = text;
  std::string rest = text;
  const bool uri = is_model_uri(text);
  if (uri) rest = text.substr(std::char_traits<char>::length(kUriPrefix));
  const size_t at = rest.find('@');
  const size_t sep = rest.find(uri ? '/' : ':');
  if (at != std::string::npos && sep != std::string::npos)
    bad_ref(text, "give a version or an alias, not both");
  if (at != std::string::npos) {
    ref.name = rest.substr(0, at);
    ref.alias = rest.substr(at + 1);
    try {
      check_alias(ref.alias);
    } catch (const ConfigError&) {
      if (ref.alias != "latest") bad_ref(text, "'" + ref.alias + "' is not an alias name");
      ref.alias.clear();
    }
  } else if (sep != std::string::npos) {
    ref.name = rest.substr(0, sep);
    const std::string v = rest.substr(sep + 1);
    if (v != "latest") {
      ref.version = parse_version(v);
      if (!ref.version) bad_ref(text, "'" + v + "' is not a version number (1, 2, ...)");
    }
  } else {
    if (uri) bad_ref(text, "a models:/ URI needs /VERSION or @ALIAS");
    ref.name = rest;
  }
  try {
    check_model_name(ref.name);
  } catch (const ConfigError& e) {
    bad_ref(text, e.what());
  }
  return ref;
}

int64_t ModelRegistry::register_model(const fs::path& dir, const RegisterOptions& options) {
  check_model_name(options.name);
  for (const auto& [k, v] : options.tags) {
    if (k.empty()) throw ConfigError("--tag: expected key=value with a non-empty key");
  }
  const nlohmann::json described = models::check_model_dir(dir);
  // Loading checks that the weights are what model.json says (names and shapes).
  models::load_model(dir);
  std::vector<ModelFile> files;
  for (const auto& name : kModelFiles) {
    const fs::path p = dir / name;
    std::error_code ec;
    if (!fs::exists(p, ec)) continue;
    if (!fs::is_regular_file(p, ec)) throw DataError(p.string() + ": not a regular file");
    const std::string bytes = read_file(p, kMaxModelFileBytes);
    files.push_back({name, ws_.put_blob(bytes), static_cast<int64_t>(bytes.size())});
  }
  const nlohmann::json metrics = options.run_metrics.is_null()
                                     ? described.value("metrics", nlohmann::json::object())
                                     : options.run_metrics;
  int64_t version = 0;
  Db& db = ws_.db();
  db.transaction([&] {
    Statement(db, "INSERT OR IGNORE INTO registered_models (name, created) VALUES (?, ?)")
        .bind_all(options.name, now_seconds())
        .run();
    Statement next(db, "SELECT next_version FROM registered_models WHERE name = ?");
    next.bind_all(options.name);
    next.step();
    version = next.integer(0);
    Statement(db, "UPDATE registered_models SET next_version = ? WHERE name = ?")
        .bind_all(version + 1, options.name)
        .run();
    Statement(db,
              "INSERT INTO model_versions (name, version, run_id, source, description, created, "
              "creator, architecture, metrics, config) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
        .bind_all(options.name, version, options.run_id, options.source, options.description,
                  now_seconds(), creator(), described["architecture"].dump(), metrics.dump(),
                  described.value("config", nlohmann::json::object()).dump())
        .run();
    Statement f(db,
                "INSERT INTO model_files (name, version, path, sha256, size) VALUES (?, ?, ?, ?, "
                "?)");
    for (const auto& file : files) {
      f.reset();
      f.bind_all(options.name, version, file.path, file.sha256, file.size).run();
    }
    Statement t(db,
                "INSERT INTO model_version_tags (name, version, key, value) VALUES (?, ?, ?, ?)");
    for (const auto& [k, v] : options.tags) {
      t.reset();
      t.bind_all(options.name, version, k, v).run();
    }
  });
  return version;
}

int64_t ModelRegistry::register_from_run(const std::string& run_id, std::string prefix,
                                         RegisterOptions options) {
  const RunRecord run = ws_.get_run(run_id);
  // The seed's flow names the folder as it was in the run: outputs/model.
  const std::string out_name = fs::path(run.output_dir).filename().string();
  for (const std::string& lead : {std::string("outputs/"), out_name + "/"}) {
    if (prefix.rfind(lead, 0) == 0) {
      prefix = prefix.substr(lead.size());
      break;
    }
  }
  while (!prefix.empty() && prefix.back() == '/') prefix.pop_back();
  ScopedTempDir tmp(fs::temp_directory_path(), "dtrain-register-");
  int64_t found = 0;
  for (const auto& a : ws_.artifacts(run.id)) {
    const fs::path p(a.path);
    if (p.parent_path().generic_string() != prefix) continue;
    if (std::find(kModelFiles.begin(), kModelFiles.end(), p.filename().string()) ==
        kModelFiles.end()) {
      continue;
    }
    write_file_atomic(tmp.path() / p.filename(),
                      ws_.read_verified_blob(a.sha256, a.size, "run " + run.id + " " + a.path));
    ++found;
  }
  if (found == 0) {
    throw DataError("run " + run.id + " has no stored model files under '" + prefix +
                    "/' (see: dtrain runs show " + run.id.substr(0, 8) + ")");
  }
  options.run_id = run.id;
  options.source = "run " + run.id + ": " + prefix;
  nlohmann::json metrics = nlohmann::json::object();
  for (const auto& [k, v] : run.metrics) metrics[k] = v;
  options.run_metrics = metrics;
  return register_model(tmp.path(), options);
}

std::vector<std::string> ModelRegistry::names() {
  Statement st(ws_.db(), "SELECT name FROM registered_models ORDER BY name");
  std::vector<std::string> out;
  while (st.step()) out.push_back(st.text(0));
  return out;
}

std::vector<ModelVersion> ModelRegistry::versions(const std::string& name) {
  Db& db = ws_.db();
  Statement st(db,
               "SELECT version, run_id, source, description, created, creator, architecture, "
               "metrics, config FROM model_versions WHERE name = ? ORDER BY version");
  st.bind_all(name);
  std::vector<ModelVersion> out;
  while (st.step()) {
    ModelVersion v;
    v.name = name;
    v.version = st.integer(0);
    v.run_id = st.text(1);
    v.source = st.text(2);
    v.description = st.text(3);
    v.created = st.real(4);
    v.creator = st.text(5);
    v.architecture = nlohmann::json::parse(st.text(6), nullptr, false);
    v.metrics = nlohmann::json::parse(st.text(7), nullptr, false);
    v.config = nlohmann::json::parse(st.text(8), nullptr, false);
    out.push_back(std::move(v));
  }
  for (auto& v : out) {
    Statement f(db,
                "SELECT path, sha256, size FROM model_files WHERE name = ? AND version = ? "
                "ORDER BY path");
    f.bind_all(name, v.version);
    while (f.step()) v.files.push_back({f.text(0), f.text(1), f.integer(2)});
    Statement a(db,
                "SELECT alias FROM model_aliases WHERE name = ? AND version = ? ORDER BY alias");
    a.bind_all(name, v.version);
    while (a.step()) v.aliases.push_back(a.text(0));
    Statement t(db, "SELECT key, value FROM model_version_tags WHERE name = ? AND version = ?");
    t.bind_all(name, v.version);
    while (t.step()) v.tags[t.text(0)] = t.text(1);
  }
  return out;
}

ModelVersion ModelRegistry::resolve(const ModelRef& ref) {
  const auto all_names = names();
  if (std::find(all_names.begin(), all_names.end(), ref.name) == all_names.end()) {
    throw ConfigError("model '" + ref.text + "': no registered model '" + ref.name +
                      "' in workspace " + ws_.root().string() +
                      "; registered models: " + joined(all_names));
  }
  auto versions = this->versions(ref.name);
  std::vector<std::string> numbers, aliases;
  for (const auto& v : versions) {
    numbers.push_back(std::to_string(v.version));
    for (const auto& a : v.aliases) aliases.push_back(a + " -> " + std::to_string(v.version));
  }
  if (versions.empty()) {
    throw ConfigError("model '" + ref.text + "': '" + ref.name +
                      "' has no versions left (all were deleted)");
  }
  if (!ref.alias.empty()) {
    for (auto& v : versions) {
      if (std::find(v.aliases.begin(), v.aliases.end(), ref.alias) != v.aliases.end()) return v;
    }
    throw ConfigError("model '" + ref.text + "': '" + ref.name + "' has no alias '" + ref.alias +
                      "'; its aliases: " + joined(aliases));
  }
  if (!ref.version) return versions.back();
  for (auto& v : versions) {
    if (v.version == *ref.version) return v;
  }
  throw ConfigError("model '" + ref.text + "': '" + ref.name + "' has no version " +
                    std::to_string(*ref.version) + "; its versions: " + joined(numbers));
}

void ModelRegistry::require_version(const std::string& name, int64_t version) {
  ModelRef ref;
  ref.name = name;
  ref.version = version;
  ref.text = name + ":" + std::to_string(version);
  resolve(ref);
}

void ModelRegistry::set_alias(const std::string& name, int64_t version, const std::string& alias) {
  check_alias(alias);
  require_version(name, version);
  Db& db = ws_.db();
  db.transaction([&] {
    Statement(db, "INSERT OR REPLACE INTO model_aliases (name, alias, version) VALUES (?, ?, ?)")
        .bind_all(name, alias, version)
        .run();
  });
}

void ModelRegistry::delete_alias(const std::string& name, const std::string& alias) {
  ModelRef ref;
  ref.name = name;
  ref.alias = alias;
  ref.text = name + "@" + alias;
  resolve(ref);  // names what exists when the alias does not
  Db& db = ws_.db();
  db.transaction([&] {
    Statement(db, "DELETE FROM model_aliases WHERE name = ? AND alias = ?")
        .bind_all(name, alias)
        .run();
  });
}

void ModelRegistry::set_tags(const std::string& name, int64_t version,
                             const std::map<std::string, std::string>& tags) {
  require_version(name, version);
  Db& db = ws_.db();
  db.transaction([&] {
    Statement t(db,
                "INSERT OR REPLACE INTO model_version_tags (name, version, key, value) "
                "VALUES (?, ?, ?, ?)");
    for (const auto& [k, v] : tags) {
      t.reset();
      t.bind_all(name, version, k, v).run();
    }
  });
}

void ModelRegistry::delete_tag(const std::string& name, int64_t version, const std::string& key) {
  require_version(name, version);
  Db& db = ws_.db();
  db.transaction([&] {
    Statement(db, "DELETE FROM model_version_tags WHERE name = ? AND version = ? AND key = ?")
        .bind_all(name, version, key)
        .run();
  });
}

void ModelRegistry::delete_version(const std::string& name, int64_t version) {
  require_version(name, version);
  Db& db = ws_.db();
  db.transaction([&] {
    for (const char* table : {"model_aliases", "model_version_tags", "model_files"}) {
      Statement(db, std::string("DELETE FROM ") + table + " WHERE name = ? AND version = ?")
          .bind_all(name, version)
          .run();
    }
    Statement(db, "DELETE FROM model_versions WHERE name = ? AND version = ?")
        .bind_all(name, version)
        .run();
  });
}

std::vector<fs::path> ModelRegistry::download(const ModelVersion& version, const fs::path& dir,
                                              bool force) {
  const std::string what = version.name + ":" + std::to_string(version.version);
  std::vector<std::pair<fs::path, std::string>> files;
  for (const auto& f : version.files) {
    if (std::find(kModelFiles.begin(), kModelFiles.end(), f.path) == kModelFiles.end()) {
      throw DataError(what + ": the registry lists a file '" + f.path +
                      "' that is not a model file; refusing it");
    }
    files.emplace_back(dir / f.path, ws_.read_verified_blob(f.sha256, f.size, what + " " + f.path));
  }
  std::error_code ec;
  for (const auto& [path, bytes] : files) {
    if (!force && fs::exists(path, ec) && read_file(path, kMaxModelFileBytes) != bytes) {
      throw ConfigError(path.string() + " exists and differs from " + what +
                        "'s file; give --force to overwrite it");
    }
  }
  std::vector<fs::path> written;
  for (const auto& [path, bytes] : files) {
    write_file_atomic(path, bytes);
    written.push_back(path);
  }
  return written;
}

}  // namespace dtrain::tracking
