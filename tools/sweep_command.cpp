// dtrain sweep: hyperparameter sweeps of `dtrain train` trials (HyperDrive-style).
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <iostream>

#include "core/errors.h"
#include "core/file_util.h"
#include "tools/cli_util.h"
#include "tools/commands.h"
#include "tools/sweep/runner.h"
#include "tools/tracking/workspace.h"
#include "tools/workspace_flags.h"

namespace dtrain::cli {
namespace fs = std::filesystem;

namespace {

/// This binary, so trials run the same dtrain as the controller.
std::string self_binary() {
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  return ec ? "dtrain" : self.string();
}

}  // namespace

int sweep_command(int argc, char** argv) {
  cxxopts::Options options("dtrain sweep",
                           "Run a hyperparameter sweep of dtrain train trials (see README).");
  add_workspace_flag(options);
  options.add_options()("spec", "sweep spec (JSON file)", cxxopts::value<std::string>())(
      "resume", "continue the sweep with this id (its parent run)", cxxopts::value<std::string>())(
      "output-dir", "where trial outputs go (default sweeps/<sweep id>)",
      cxxopts::value<std::string>())("max-total-runs", "override the spec's max_total_runs",
                                     cxxopts::value<std::string>())(
      "max-concurrent-runs", "override the spec's max_concurrent_runs",
      cxxopts::value<std::string>())("max-duration-minutes",
                                     "override the spec's max_duration_minutes",
                                     cxxopts::value<std::string>())(
      "register-best", "register the best trial's model under this name",
      cxxopts::value<std::string>())("h,help", "show this help");
  cxxopts::ParseResult r;
  if (!parse_or_help(options, argc, argv, r)) return 0;
  if (r.count("spec") == r.count("resume")) {
    throw ConfigError("give --spec FILE (a new sweep) or --resume SWEEP_ID (continue one)");
  }
  sweep::SweepOptions opts;
  opts.workspace = workspace_flag(r);
  opts.dtrain_binary = self_binary();
  if (r.count("output-dir")) opts.output_dir = r["output-dir"].as<std::string>();
  if (r.count("register-best")) {
    opts.register_best = r["register-best"].as<std::string>();
    if (!valid_model_name(opts.register_best)) {
      throw ConfigError(
          "--register-best: expected a model name of letters, digits, '.', '_' or "
          "'-', got '" +
          opts.register_best + "'");
    }
  }
  nlohmann::json spec_json;
  std::string source;
  if (r.count("spec")) {
    source = r["spec"].as<std::string>();
    try {
      spec_json = nlohmann::json::parse(read_file(source, 16u << 20));
    } catch (const nlohmann::json::exception& e) {
      throw ConfigError(source + ": not valid JSON (" + e.what() + ")");
    }
  } else {
    opts.resume_id = r["resume"].as<std::string>();
    {
      tracking::Workspace ws(opts.workspace, /*create=*/false);
      opts.resume_id = ws.resolve_run(opts.resume_id);
      const tracking::RunRecord sweep_run = ws.get_run(opts.resume_id);
      auto out = sweep_run.params.find("output_dir");
      if (opts.output_dir.empty() && out != sweep_run.params.end()) opts.output_dir = out->second;
    }
    source = "sweep " + opts.resume_id.substr(0, 8);
    spec_json = sweep::stored_spec(opts.workspace, opts.resume_id).to_json();
  }
  // Flags override the spec's limits (checked like the spec's own values).
  for (const char* key : {"max-total-runs", "max-concurrent-runs", "max-duration-minutes"}) {
    if (!r.count(key)) continue;
    std::string json_key = key;
    for (char& c : json_key) c = c == '-' ? '_' : c;
    const double v = double_flag(r, key);
    spec_json[json_key] = std::string(key) == "max-duration-minutes"
                              ? nlohmann::json(v)
                              : nlohmann::json(static_cast<int64_t>(v));
    if (std::string(key) != "max-duration-minutes" &&
        v != static_cast<double>(static_cast<int64_t>(v))) {
      throw ConfigError(std::string("--") + key + ": expected a whole number");
    }
  }
  sweep::SweepSpec spec = sweep::SweepSpec::parse(spec_json, source);
  // The workspace is checked before any trial starts.
  { tracking::Workspace check(opts.workspace, /*create=*/true); }
  sweep::SweepRunner runner(std::move(spec), std::move(opts));
  return runner.run();
}

}  // namespace dtrain::cli
