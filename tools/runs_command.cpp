// dtrain runs: list, show, compare, delete, restore and download the runs of a workspace.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <ctime>
#include <iostream>
#include <set>

#include "core/errors.h"
#include "core/file_util.h"
#include "core/text_table.h"
#include "tools/cli_util.h"
#include "tools/commands.h"
#include "tools/sinks/curves.h"
#include "tools/tracking/run_filter.h"
#include "tools/tracking/workspace.h"
#include "tools/workspace_flags.h"

namespace dtrain::cli {
namespace fs = std::filesystem;
using tracking::RunRecord;
using tracking::Workspace;

namespace {

constexpr const char* kRunsUsage =
    "usage: dtrain runs <list|show|compare|delete|restore|get> [flags]\n"
    "\n"
    "  list     [--experiment E] [--filter EXPR] [--order-by KEY] [--limit N] [--all] [--json]\n"
    "  show     RUN [--json]\n"
    "  compare  RUN RUN... [--plot FILE.png]\n"
    "  delete   RUN            (soft delete: hidden from list, restorable)\n"
    "  restore  RUN\n"
    "  get      RUN --to DIR [--force]   (download the run's artifacts, verified)\n"
    "\n"
    "Every subcommand takes --workspace DIR (env DTRAIN_WORKSPACE, default dtrain-workspace).\n"
    "RUN is a run id or a unique prefix of one.\n";

const std::vector<std::string> kKeyParams = {"learning_rate", "batch_size", "optimizer",
                                             "hidden_sizes", "epochs"};

void add_common(cxxopts::Options& options) {
  add_workspace_flag(options);
  options.add_options()("h,help", "show this help");
}

std::string duration_text(const RunRecord& r, double now) {
  const double end = r.end_time > 0 ? r.end_time : now;
  const auto s = static_cast<int64_t>(std::max(0.0, end - r.start_time) + 0.5);
  if (s >= 3600) return fmt::format("{}h{:02}m", s / 3600, (s / 60) % 60);
  if (s >= 60) return fmt::format("{}m{:02}s", s / 60, s % 60);
  return fmt::format("{}s", s);
}

std::string metric_text(const RunRecord& r, const std::string& key) {
  auto it = r.metrics.find(key);
  return it == r.metrics.end() ? "-" : fmt::format("{:.4f}", it->second);
}

nlohmann::json run_json(const RunRecord& r, double now, const std::string& host) {
  return {{"id", r.id},
          {"experiment", r.experiment},
          {"name", r.name},
          {"status", tracking::effective_status(r, now, host)},
          {"recorded_status", r.status},
          {"error", r.error},
          {"start_time", r.start_time},
          {"end_time", r.end_time > 0 ? nlohmann::json(r.end_time) : nlohmann::json()},
          {"heartbeat", r.heartbeat},
          {"host", r.host},
          {"pid", r.pid},
          {"world_size", r.world_size},
          {"strategy", r.strategy},
          {"dtrain_version", r.dtrain_version},
          {"output_dir", r.output_dir},
          {"deleted", r.deleted},
          {"params", r.params},
          {"tags", r.tags},
          {"metrics", r.metrics}};
}

/// Positional RUN arguments after the subcommand (cxxopts "runs" positional list).
std::vector<std::string> run_arguments(const cxxopts::ParseResult& r) {
  return r.count("runs") ? r["runs"].as<std::vector<std::string>>() : std::vector<std::string>{};
}

cxxopts::ParseResult parse_with_runs(cxxopts::Options& options, int argc, char** argv, bool& help) {
  options.add_options()("runs", "run ids", cxxopts::value<std::vector<std::string>>());
  options.parse_positional({"runs"});
  options.positional_help("RUN...");
  cxxopts::ParseResult r;
  help = !parse_or_help(options, argc, argv, r);
  return r;
}

int list_runs(int argc, char** argv) {
  cxxopts::Options options("dtrain runs list", "List the runs of a workspace.");
  add_common(options);
  options.add_options()("experiment", "only this experiment", cxxopts::value<std::string>())(
      "filter", "e.g. \"metrics.validation_acc > 0.97 and params.batch_size = 50\"",
      cxxopts::value<std::string>())("order-by", "KEY [ASC|DESC], ... (default start_time DESC)",
                                     cxxopts::value<std::string>())(
      "limit", "at most N runs", cxxopts::value<std::string>())("all", "include deleted runs")(
      "json", "print JSON");
  cxxopts::ParseResult r;
  if (!parse_or_help(options, argc, argv, r)) return 0;
  const tracking::RunFilter filter(r.count("filter") ? r["filter"].as<std::string>() : "");
  int64_t limit = -1;
  if (r.count("limit")) {
    limit = int_flag(r, "limit");
    if (limit < 0) throw ConfigError("--limit: expected 0 or more, got " + std::to_string(limit));
  }
  Workspace ws(workspace_flag(r), /*create=*/false);
  const double now = tracking::now_seconds();
  const std::string host = tracking::host_name();
  std::vector<RunRecord> runs;
  for (auto& run : ws.list_runs(r.count("experiment") ? r["experiment"].as<std::string>() : "",
                                r.count("all") > 0)) {
    if (filter.matches(run, now, host)) runs.push_back(std::move(run));
  }
  tracking::order_runs(runs, r.count("order-by") ? r["order-by"].as<std::string>() : "", now, host);
  if (limit >= 0 && static_cast<int64_t>(runs.size()) > limit) runs.resize(limit);

  if (r.count("json")) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& run : runs) out.push_back(run_json(run, now, host));
    std::cout << out.dump(2) << std::endl;
    return 0;
  }
  std::vector<std::vector<std::string>> rows = {{"ID", "NAME", "EXPERIMENT", "STATUS", "START",
                                                 "DURATION", "LR", "BATCH", "OPTIMIZER", "HIDDEN",
                                                 "EPOCHS", "VAL_ACC"}};
  for (const auto& run : runs) {
    std::vector<std::string> row = {
        run.id.substr(0, 8),
        run.name,
        run.experiment,
        tracking::effective_status(run, now, host) + (run.deleted ? " (deleted)" : ""),
        format_local_time(run.start_time),
        duration_text(run, now)};
    for (const auto& key : kKeyParams) {
      auto it = run.params.find(key);
      row.push_back(it == run.params.end() ? "-" : it->second);
    }
    row.push_back(metric_text(run, "validation_acc"));
    rows.push_back(row);
  }
  std::cout << format_table(rows);
  if (runs.empty()) std::cout << "(no runs)\n";
  return 0;
}

/// Epoch rows of a run's metric history: epoch -> key -> value.
std::map<int64_t, std::map<std::string, double>> epoch_table(Workspace& ws, const std::string& id) {
  std::map<int64_t, std::map<std::string, double>> table;
  for (const auto& p : ws.metric_history(id)) {
    if (p.key != "step_loss") table[p.epoch][p.key] = p.value;
  }
  return table;
}

int show_run(int argc, char** argv) {
  cxxopts::Options options("dtrain runs show", "Show one run.");
  add_common(options);
  options.add_options()("json", "print JSON");
  bool help = false;
  auto r = parse_with_runs(options, argc, argv, help);
  if (help) return 0;
  const auto ids = run_arguments(r);
  if (ids.size() != 1)
    throw ConfigError("dtrain runs show: expected one RUN, got " + std::to_string(ids.size()));
  Workspace ws(workspace_flag(r), /*create=*/false);
  const RunRecord run = ws.get_run(ws.resolve_run(ids[0]));
  const double now = tracking::now_seconds();
  const std::string host = tracking::host_name();
  const auto epochs = epoch_table(ws, run.id);
  const auto artifacts = ws.artifacts(run.id);
  if (r.count("json")) {
    nlohmann::json j = run_json(run, now, host);
    j["epochs"] = nlohmann::json::array();
    for (const auto& [epoch, values] : epochs) {
      nlohmann::json e = values;
      e["epoch"] = epoch;
      j["epochs"].push_back(e);
    }
    j["step_loss"] = nlohmann::json::array();
    for (const auto& p : ws.metric_history(run.id, "step_loss")) {
      j["step_loss"].push_back({{"step", p.step}, {"epoch", p.epoch}, {"value", p.value}});
    }
    j["artifacts"] = nlohmann::json::array();
    for (const auto& a : artifacts) {
      j["artifacts"].push_back({{"path", a.path}, {"sha256", a.sha256}, {"size", a.size}});
    }
    std::cout << j.dump(2) << std::endl;
    return 0;
  }
  std::cout << "run         " << run.id << (run.deleted ? " (deleted)" : "") << "\n"
            << "name        " << run.name << "\n"
            << "experiment  " << run.experiment << "\n"
            << "status      " << tracking::effective_status(run, now, host)
            << (run.error.empty() ? "" : ": " + run.error) << "\n"
            << "started     " << format_local_time(run.start_time) << " on " << run.host << " (pid "
            << run.pid << ")\n"
            << "duration    " << duration_text(run, now) << "\n"
            << "strategy    " << run.strategy << ", " << run.world_size << " process"
            << (run.world_size == 1 ? "" : "es") << ", dtrain " << run.dtrain_version << "\n"
            << "outputs     " << run.output_dir << "\n";
  std::cout << "\nparams\n";
  for (const auto& [k, v] : run.params) std::cout << "  " << k << " = " << v << "\n";
  if (!run.tags.empty()) {
    std::cout << "\ntags\n";
    for (const auto& [k, v] : run.tags) std::cout << "  " << k << " = " << v << "\n";
  }
  std::cout << "\nmetrics per epoch\n";
  std::vector<std::vector<std::string>> rows = {
      {"  EPOCH", "TRAIN_LOSS", "TRAIN_ACC", "VAL_LOSS", "VAL_ACC", "SECONDS", "SAMPLES/S"}};
  for (const auto& [epoch, v] : epochs) {
    auto get = [&](const char* k, const char* f) {
      auto it = v.find(k);
      return it == v.end() ? std::string("-") : fmt::format(fmt::runtime(f), it->second);
    };
    rows.push_back({"  " + std::to_string(epoch), get("train_loss", "{:.4f}"),
                    get("train_acc", "{:.4f}"), get("validation_loss", "{:.4f}"),
                    get("validation_acc", "{:.4f}"), get("epoch_seconds", "{:.2f}"),
                    get("samples_per_second", "{:.0f}")});
  }
  std::cout << format_table(rows);
  std::cout << "\nartifacts\n";
  for (const auto& a : artifacts) {
    std::cout << fmt::format("  {:>10}  {}  {}\n", a.size, a.sha256.substr(0, 12), a.path);
  }
  if (artifacts.empty()) std::cout << "  (none yet: they are stored when the run completes)\n";
  return 0;
}

int compare_runs(int argc, char** argv) {
  cxxopts::Options options("dtrain runs compare", "Compare runs side by side.");
  add_common(options);
  options.add_options()("plot", "also draw their validation curves into this PNG",
                        cxxopts::value<std::string>());
  bool help = false;
  auto r = parse_with_runs(options, argc, argv, help);
  if (help) return 0;
  const auto ids = run_arguments(r);
  if (ids.size() < 2) {
    throw ConfigError("dtrain runs compare: expected at least two RUNs, got " +
                      std::to_string(ids.size()));
  }
  if (r.count("plot") && fs::path(r["plot"].as<std::string>()).extension() != ".png") {
    throw ConfigError("--plot: expected a file name ending in .png, got '" +
                      r["plot"].as<std::string>() + "'");
  }
  Workspace ws(workspace_flag(r), /*create=*/false);
  std::vector<RunRecord> runs;
  for (const auto& id : ids) runs.push_back(ws.get_run(ws.resolve_run(id)));

  std::vector<std::string> header = {""};
  for (const auto& run : runs) header.push_back(run.id.substr(0, 8) + " " + run.name);
  std::set<std::string> keys;
  for (const auto& run : runs) {
    for (const auto& [k, v] : run.params) keys.insert(k);
  }
  std::vector<std::vector<std::string>> rows = {header};
  for (const auto& k : keys) {
    std::vector<std::string> row = {"params." + k};
    std::set<std::string> distinct;
    for (const auto& run : runs) {
      auto it = run.params.find(k);
      row.push_back(it == run.params.end() ? "-" : it->second);
      distinct.insert(row.back());
    }
    if (distinct.size() > 1) rows.push_back(row);
  }
  if (rows.size() == 1) rows.push_back({"(all params equal)"});
  std::set<std::string> metric_keys;
  for (const auto& run : runs) {
    for (const auto& [k, v] : run.metrics) {
      if (k != "step_loss") metric_keys.insert(k);
    }
  }
  for (const auto& k : metric_keys) {
    std::vector<std::string> row = {"metrics." + k};
    for (const auto& run : runs) row.push_back(metric_text(run, k));
    rows.push_back(row);
  }
  std::cout << format_table(rows);

  if (r.count("plot")) {
    sinks::Panel acc{"Validation accuracy", "epoch", "accuracy", {}};
    sinks::Panel loss{"Validation loss", "epoch", "cross-entropy loss", {}};
    for (const auto& run : runs) {
      sinks::Series a{run.name + " (" + run.id.substr(0, 8) + ")"}, l{a.label};
      for (const auto& [epoch, v] : epoch_table(ws, run.id)) {
        if (auto it = v.find("validation_acc"); it != v.end()) {
          a.x.push_back(static_cast<double>(epoch));
          a.y.push_back(it->second);
        }
        if (auto it = v.find("validation_loss"); it != v.end()) {
          l.x.push_back(static_cast<double>(epoch));
          l.y.push_back(it->second);
        }
      }
      acc.series.push_back(a);
      loss.series.push_back(l);
    }
    const fs::path png = r["plot"].as<std::string>();
    sinks::plot_png(png, {acc, loss});
    std::cout << "plot written: " << png.string() << "\n";
  }
  return 0;
}

int set_deleted(int argc, char** argv, bool deleted) {
  cxxopts::Options options(deleted ? "dtrain runs delete" : "dtrain runs restore",
                           deleted ? "Hide a run (restorable)." : "Restore a deleted run.");
  add_common(options);
  bool help = false;
  auto r = parse_with_runs(options, argc, argv, help);
  if (help) return 0;
  const auto ids = run_arguments(r);
  if (ids.empty()) throw ConfigError(options.program() + ": expected at least one RUN");
  Workspace ws(workspace_flag(r), /*create=*/false);
  for (const auto& id : ids) {
    const std::string full = ws.resolve_run(id);
    ws.set_deleted(full, deleted);
    std::cout << (deleted ? "deleted " : "restored ") << full << "\n";
  }
  return 0;
}

/// A stored artifact path is relative and stays inside the folder it is written to.
fs::path safe_relative(const std::string& path, const std::string& run_id) {
  const fs::path p(path);
  bool ok = !path.empty() && p.is_relative();
  for (const auto& part : p) ok = ok && part != ".." && part != ".";
  if (!ok) {
    throw DataError("run " + run_id + ": artifact path '" + path +
                    "' in the workspace is not a plain relative path; refusing it");
  }
  return p;
}

int get_run(int argc, char** argv) {
  cxxopts::Options options("dtrain runs get", "Download a run's artifacts, verified by SHA-256.");
  add_common(options);
  options.add_options()("to", "folder to write them into", cxxopts::value<std::string>())(
      "force", "overwrite files in the folder that differ");
  bool help = false;
  auto r = parse_with_runs(options, argc, argv, help);
  if (help) return 0;
  const auto ids = run_arguments(r);
  if (ids.size() != 1) {
    throw ConfigError("dtrain runs get: expected one RUN, got " + std::to_string(ids.size()));
  }
  if (!r.count("to") || r["to"].as<std::string>().empty()) throw ConfigError("--to is required");
  const fs::path to = r["to"].as<std::string>();
  check_download_folder(to);
  Workspace ws(workspace_flag(r), /*create=*/false);
  const std::string id = ws.resolve_run(ids[0]);
  const auto artifacts = ws.artifacts(id);
  if (artifacts.empty()) {
    throw DataError("run " + id + " has no stored artifacts (it has not completed)");
  }
  // Verify everything before writing anything: a damaged store leaves the folder untouched.
  std::vector<std::pair<fs::path, std::string>> files;
  for (const auto& a : artifacts) {
    const fs::path rel = safe_relative(a.path, id);
    files.emplace_back(
        rel, ws.read_verified_blob(a.sha256, a.size, "run " + id.substr(0, 8) + " " + a.path));
  }
  for (const auto& [rel, bytes] : files) {
    const fs::path dest = to / rel;
    std::error_code ec;
    if (fs::exists(dest, ec) && !r.count("force")) {
      if (read_file(dest) != bytes) {
        throw ConfigError(dest.string() +
                          " exists and differs from the run's file; give --force to overwrite");
      }
    }
  }
  int64_t total = 0;
  for (const auto& [rel, bytes] : files) {
    write_file_atomic(to / rel, bytes);
    total += static_cast<int64_t>(bytes.size());
  }
  std::cout << "wrote " << files.size() << " files (" << total << " bytes, SHA-256 verified) to "
            << to.string() << "\n";
  return 0;
}

}  // namespace

int runs_command(int argc, char** argv) {
  return dispatch_subcommand("dtrain runs", kRunsUsage,
                             {{"list", list_runs},
                              {"show", show_run},
                              {"compare", compare_runs},
                              {"delete", [](int c, char** v) { return set_deleted(c, v, true); }},
                              {"restore", [](int c, char** v) { return set_deleted(c, v, false); }},
                              {"get", get_run}},
                             argc, argv);
}

}  // namespace dtrain::cli
