// dtrain model: register, list, show, alias, tag, delete and download registered models.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <ctime>
#include <iostream>

#include "core/errors.h"
#include "core/file_util.h"
#include "core/text_table.h"
#include "tools/cli_util.h"
#include "tools/commands.h"
#include "tools/tracking/model_registry.h"
#include "tools/workspace_flags.h"

namespace dtrain::cli {
namespace fs = std::filesystem;
using tracking::ModelRef;
using tracking::ModelRegistry;
using tracking::ModelVersion;
using tracking::Workspace;

namespace {

constexpr const char* kModelUsage =
    "usage: dtrain model <command> [flags]\n"
    "\n"
    "  register  --name NAME (--run RUN [--path outputs/model] | --path DIR) [--tag k=v]...\n"
    "            [--description TEXT]\n"
    "  list      [--json]\n"
    "  show      NAME[:VERSION|@ALIAS] [--json]\n"
    "  alias     NAME VERSION ALIAS        (moves ALIAS to VERSION)\n"
    "  alias     --delete NAME ALIAS\n"
    "  tag       NAME:VERSION key=value... [--delete KEY]\n"
    "  delete    NAME:VERSION              (its aliases go with it)\n"
    "  download  NAME[:VERSION|@ALIAS] --to DIR [--force]\n"
    "\n"
    "Every command takes --workspace DIR (env DTRAIN_WORKSPACE, default dtrain-workspace).\n"
    "Registered models are accepted wherever a model path is: models:/NAME/VERSION,\n"
    "models:/NAME@ALIAS, models:/NAME/latest.\n";

/// Options with --workspace, --help and positional arguments.
struct Command {
  cxxopts::Options options;
  cxxopts::ParseResult result;
  std::vector<std::string> args;

  Command(const std::string& name, const std::string& help, const std::string& positional)
      : options("dtrain model " + name, help) {
    add_workspace_flag(options);
    options.add_options()("h,help", "show this help")("args", "arguments",
                                                      cxxopts::value<std::vector<std::string>>());
    options.parse_positional({"args"});
    options.positional_help(positional);
  }
  /// False when --help was printed.
  bool parse(int argc, char** argv) {
    if (!parse_or_help(options, argc, argv, result)) return false;
    if (result.count("args")) args = result["args"].as<std::vector<std::string>>();
    return true;
  }
  void expect_args(size_t n) const {
    if (args.size() != n) {
      throw ConfigError(options.program() + ": expected " + std::to_string(n) + " argument" +
                        (n == 1 ? "" : "s") + " (" + options.program() + " " + "--help), got " +
                        std::to_string(args.size()));
    }
  }
};

std::map<std::string, std::string> parse_tags(const std::vector<std::string>& items,
                                              const std::string& what) {
  std::map<std::string, std::string> tags;
  for (const auto& t : items) {
    const size_t eq = t.find('=');
    if (eq == 0 || eq == std::string::npos) {
      throw ConfigError(what + ": expected key=value, got '" + t + "'");
    }
    tags[t.substr(0, eq)] = t.substr(eq + 1);
  }
  return tags;
}

/// NAME:VERSION with an explicit version.
ModelRef exact_version(const std::string& text) {
  ModelRef ref = tracking::parse_model_ref(text);
  if (!ref.version) throw ConfigError("'" + text + "': expected NAME:VERSION (a version number)");
  return ref;
}

nlohmann::json version_json(const ModelVersion& v) {
  nlohmann::json files = nlohmann::json::array();
  for (const auto& f : v.files) {
    files.push_back({{"path", f.path}, {"sha256", f.sha256}, {"size", f.size}});
  }
  return {{"name", v.name},       {"version", v.version},           {"run_id", v.run_id},
          {"source", v.source},   {"description", v.description},   {"created", v.created},
          {"creator", v.creator}, {"architecture", v.architecture}, {"metrics", v.metrics},
          {"config", v.config},   {"aliases", v.aliases},           {"tags", v.tags},
          {"files", files}};
}

std::string metric_text(const nlohmann::json& metrics, const char* key) {
  if (!metrics.is_object() || !metrics.contains(key) || !metrics[key].is_number()) return "-";
  return fmt::format("{:.4f}", metrics[key].get<double>());
}

int register_command(int argc, char** argv) {
  Command c("register", "Register a trained model as the next version of NAME.", "");
  c.options.add_options()("name", "registered model name", cxxopts::value<std::string>())(
      "run", "the run whose artifacts hold the model", cxxopts::value<std::string>())(
      "path",
      "with --run: the model folder inside the run's outputs (default outputs/model); "
      "without: a model folder on disk",
      cxxopts::value<std::string>())("tag", "key=value (repeatable)",
                                     cxxopts::value<std::vector<std::string>>())(
      "description", "free text", cxxopts::value<std::string>());
  if (!c.parse(argc, argv)) return 0;
  c.expect_args(0);
  if (!c.result.count("name")) throw ConfigError("--name is required");
  if (!c.result.count("run") && !c.result.count("path")) {
    throw ConfigError("give --run RUN (a tracked run's model) or --path DIR (a model folder)");
  }
  tracking::RegisterOptions opts;
  opts.name = c.result["name"].as<std::string>();
  tracking::check_model_name(opts.name);
  if (c.result.count("tag")) {
    // cxxopts splits vector values on commas; rejoin so a tag value may hold commas.
    std::vector<std::string> raw;
    for (const auto& kv : c.result.arguments()) {
      if (kv.key() == "tag") raw.push_back(kv.value());
    }
    opts.tags = parse_tags(raw, "--tag");
  }
  if (c.result.count("description")) opts.description = c.result["description"].as<std::string>();
  Workspace ws(workspace_flag(c.result), /*create=*/false);
  ModelRegistry registry(ws);
  int64_t version = 0;
  if (c.result.count("run")) {
    version = registry.register_from_run(
        ws.resolve_run(c.result["run"].as<std::string>()),
        c.result.count("path") ? c.result["path"].as<std::string>() : "outputs/model", opts);
  } else {
    const fs::path dir = c.result["path"].as<std::string>();
    opts.source = fs::absolute(dir).string();
    version = registry.register_model(dir, opts);
  }
  std::cout << "registered " << opts.name << " version " << version << std::endl;
  return 0;
}

int list_command(int argc, char** argv) {
  Command c("list", "List registered models.", "");
  c.options.add_options()("json", "print JSON");
  if (!c.parse(argc, argv)) return 0;
  c.expect_args(0);
  Workspace ws(workspace_flag(c.result), /*create=*/false);
  ModelRegistry registry(ws);
  nlohmann::json out = nlohmann::json::array();
  std::vector<std::vector<std::string>> rows = {
      {"NAME", "VERSIONS", "LATEST", "ALIASES", "VAL_ACC (latest)", "REGISTERED"}};
  for (const auto& name : registry.names()) {
    const auto versions = registry.versions(name);
    nlohmann::json j = {{"name", name}, {"versions", nlohmann::json::array()}};
    std::string aliases;
    for (const auto& v : versions) {
      j["versions"].push_back(v.version);
      for (const auto& a : v.aliases) {
        aliases += (aliases.empty() ? "" : ", ") + a + "=" + std::to_string(v.version);
      }
    }
    out.push_back(j);
    if (versions.empty()) {
      rows.push_back({name, "0", "-", "-", "-", "-"});
      continue;
    }
    const auto& latest = versions.back();
    rows.push_back({name, std::to_string(versions.size()), std::to_string(latest.version),
                    aliases.empty() ? "-" : aliases, metric_text(latest.metrics, "validation_acc"),
                    format_local_time(latest.created)});
  }
  if (c.result.count("json")) {
    std::cout << out.dump(2) << std::endl;
    return 0;
  }
  std::cout << format_table(rows);
  if (rows.size() == 1) std::cout << "(no registered models)\n";
  return 0;
}

int show_command(int argc, char** argv) {
  Command c("show", "Show a registered model (all versions) or one version.",
            "NAME[:VERSION|@ALIAS]");
  c.options.add_options()("json", "print JSON");
  if (!c.parse(argc, argv)) return 0;
  c.expect_args(1);
  const ModelRef ref = tracking::parse_model_ref(c.args[0]);
  Workspace ws(workspace_flag(c.result), /*create=*/false);
  ModelRegistry registry(ws);
  std::vector<ModelVersion> shown;
  if (ref.version || !ref.alias.empty()) {
    shown.push_back(registry.resolve(ref));
  } else {
    registry.resolve(ref);  // unknown names list what exists
    shown = registry.versions(ref.name);
  }
  if (c.result.count("json")) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& v : shown) out.push_back(version_json(v));
    std::cout << (shown.size() == 1 && (ref.version || !ref.alias.empty()) ? out[0] : out).dump(2)
              << std::endl;
    return 0;
  }
  for (const auto& v : shown) {
    std::cout << v.name << " version " << v.version;
    if (!v.aliases.empty()) {
      std::cout << " (";
      for (size_t i = 0; i < v.aliases.size(); ++i) std::cout << (i ? ", @" : "@") << v.aliases[i];
      std::cout << ")";
    }
    std::cout << "\n  registered  " << format_local_time(v.created) << " by " << v.creator
              << "\n  source      " << (v.source.empty() ? "-" : v.source) << "\n  run         "
              << (v.run_id.empty() ? "-" : v.run_id) << "\n  model       " << v.architecture.dump()
              << "\n  metrics     validation_acc " << metric_text(v.metrics, "validation_acc")
              << ", validation_loss " << metric_text(v.metrics, "validation_loss") << "\n";
    if (!v.description.empty()) std::cout << "  description " << v.description << "\n";
    for (const auto& [k, val] : v.tags) std::cout << "  tag         " << k << " = " << val << "\n";
    for (const auto& f : v.files) {
      std::cout << fmt::format("  file        {:<11} {:>10} bytes  sha256 {}\n", f.path, f.size,
                               f.sha256);
    }
  }
  return 0;
}

int alias_command(int argc, char** argv) {
  Command c("alias", "Point an alias at a version, or delete it.", "NAME VERSION ALIAS");
  c.options.add_options()("delete", "delete the alias: NAME ALIAS");
  if (!c.parse(argc, argv)) return 0;
  Workspace ws(workspace_flag(c.result), /*create=*/false);
  ModelRegistry registry(ws);
  if (c.result.count("delete")) {
    c.expect_args(2);
    tracking::check_model_name(c.args[0]);
    registry.delete_alias(c.args[0], c.args[1]);
    std::cout << "deleted alias " << c.args[0] << "@" << c.args[1] << std::endl;
    return 0;
  }
  c.expect_args(3);
  tracking::check_model_name(c.args[0]);
  const ModelRef ref = exact_version(c.args[0] + ":" + c.args[1]);
  registry.set_alias(ref.name, *ref.version, c.args[2]);
  std::cout << c.args[0] << "@" << c.args[2] << " -> version " << *ref.version << std::endl;
  return 0;
}

int tag_command(int argc, char** argv) {
  Command c("tag", "Set (or delete) tags of a version.", "NAME:VERSION key=value...");
  c.options.add_options()("delete", "delete this tag key", cxxopts::value<std::string>());
  if (!c.parse(argc, argv)) return 0;
  if (c.args.empty()) c.expect_args(2);
  const ModelRef ref = exact_version(c.args[0]);
  Workspace ws(workspace_flag(c.result), /*create=*/false);
  ModelRegistry registry(ws);
  if (c.result.count("delete")) {
    c.expect_args(1);
    registry.delete_tag(ref.name, *ref.version, c.result["delete"].as<std::string>());
    return 0;
  }
  if (c.args.size() < 2) c.expect_args(2);
  registry.set_tags(ref.name, *ref.version,
                    parse_tags({c.args.begin() + 1, c.args.end()}, "dtrain model tag"));
  return 0;
}

int delete_command(int argc, char** argv) {
  Command c("delete", "Delete a version (its aliases go with it).", "NAME:VERSION");
  if (!c.parse(argc, argv)) return 0;
  c.expect_args(1);
  const ModelRef ref = exact_version(c.args[0]);
  Workspace ws(workspace_flag(c.result), /*create=*/false);
  ModelRegistry(ws).delete_version(ref.name, *ref.version);
  std::cout << "deleted " << ref.name << " version " << *ref.version << std::endl;
  return 0;
}

int download_command(int argc, char** argv) {
  Command c("download", "Write a version's files into a folder, verified by SHA-256.",
            "NAME[:VERSION|@ALIAS]");
  c.options.add_options()("to", "folder", cxxopts::value<std::string>())(
      "force", "overwrite files that differ");
  if (!c.parse(argc, argv)) return 0;
  c.expect_args(1);
  if (!c.result.count("to") || c.result["to"].as<std::string>().empty()) {
    throw ConfigError("--to is required");
  }
  const ModelRef ref = tracking::parse_model_ref(c.args[0]);
  check_download_folder(c.result["to"].as<std::string>());
  Workspace ws(workspace_flag(c.result), /*create=*/false);
  ModelRegistry registry(ws);
  const ModelVersion v = registry.resolve(ref);
  const auto written =
      registry.download(v, c.result["to"].as<std::string>(), c.result.count("force") > 0);
  std::cout << "downloaded " << v.name << " version " << v.version << " (" << written.size()
            << " files, SHA-256 verified) to " << c.result["to"].as<std::string>() << std::endl;
  return 0;
}

}  // namespace

int model_command(int argc, char** argv) {
  return dispatch_subcommand("dtrain model", kModelUsage,
                             {{"register", register_command},
                              {"list", list_command},
                              {"show", show_command},
                              {"alias", alias_command},
                              {"tag", tag_command},
                              {"delete", delete_command},
                              {"download", download_command}},
                             argc, argv);
}

}  // namespace dtrain::cli
