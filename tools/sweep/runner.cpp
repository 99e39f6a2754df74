#include "tools/sweep/runner.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <memory>
#include <thread>

#include "core/errors.h"
#include "core/file_util.h"
#include "core/stop_signal.h"
#include "core/subprocess.h"
#include "core/text_table.h"
#include "tools/sinks/curves.h"
#include "tools/sweep/policy.h"
#include "tools/tracking/model_registry.h"
#include "tools/tracking/run_tracker.h"

namespace dtrain::sweep {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

std::string params_text(const Assignment& a) {
  std::string s;
  for (const auto& [k, v] : a) s += (s.empty() ? "" : " ") + k + "=" + value_text(v);
  return s;
}

bool finished(const Trial& t) { return t.status != "running"; }

}  // namespace

SweepSpec stored_spec(const fs::path& workspace, const std::string& sweep_id) {
  tracking::Workspace ws(workspace, /*create=*/false);
  const tracking::RunRecord run = ws.get_run(ws.resolve_run(sweep_id));
  auto it = run.params.find("sweep_spec");
  if (run.tags.count("dtrain.sweep") == 0 || it == run.params.end()) {
    throw ConfigError("run " + run.id + " is not a sweep (no stored sweep spec)");
  }
  return SweepSpec::parse(nlohmann::json::parse(it->second), "sweep " + run.id.substr(0, 8));
}

/// The state of one running sweep.
struct SweepRunner::Impl {
  SweepSpec& spec;
  SweepOptions& options;
  std::vector<Trial>& trials;
  tracking::RunTracker parent;
  TerminationPolicy policy;
  std::unique_ptr<Sampler> sampler;
  fs::path out;
  std::map<int64_t, std::unique_ptr<Subprocess>> processes;
  std::map<int64_t, std::string> last_error;  // trial -> its last error line
  std::mutex error_mutex;
  int64_t next_index = 0;
  bool exhausted = false;
  double finish_counter = 0;

  Impl(SweepSpec& s, SweepOptions& o, std::vector<Trial>& t)
      : spec(s),
        options(o),
        trials(t),
        parent(o.workspace),
        policy(s.early_termination, s.maximize(), s.primary_metric),
        sampler(make_sampler(s)) {}

  tracking::Workspace& ws() { return parent.workspace(); }
  const std::string& sweep_id() const { return parent.run_id(); }

  void start_parent() {
    tracking::NewRun run;
    run.experiment = spec.experiment;
    run.name = "sweep-" + spec.experiment;
    run.strategy = "sweep";
    run.params = {{"sweep_spec", spec.to_json().dump()},
                  {"sampling", spec.sampling},
                  {"primary_metric", spec.primary_metric},
                  {"goal", spec.goal},
                  {"early_termination", spec.early_termination.policy}};
    run.tags = {{"dtrain.sweep", "parent"}};
    parent.start(run, options.resume_id, 0);
    out = options.output_dir.empty() ? fs::path("sweeps") / sweep_id().substr(0, 8)
                                     : options.output_dir;
    fs::create_directories(out);
    ws().set_params(sweep_id(), {{"output_dir", fs::absolute(out).string()}});
  }

  fs::path trial_dir(int64_t index) const { return out / fmt::format("trial-{:03}", index); }

  /// Finished trials of an earlier controller are kept; interrupted ones run again (from their
  /// checkpoints when they have one).
  std::vector<Trial> recover() {
    std::vector<Trial> to_rerun;
    const double now = tracking::now_seconds();
    const std::string host = tracking::host_name();
    for (const auto& run : ws().list_runs(spec.experiment, true)) {
      auto s = run.tags.find("sweep");
      auto i = run.tags.find("trial");
      if (s == run.tags.end() || s->second != sweep_id() || i == run.tags.end()) continue;
      Trial t;
      t.index = std::stoll(i->second);
      t.run_id = run.id;
      t.start = run.start_time;
      t.end = run.end_time;
      for (const auto& p : spec.parameters) {
        auto v = run.tags.find("param." + p.flag);
        if (v != run.tags.end()) {
          t.params[p.flag] = nlohmann::json::parse(v->second, nullptr, false);
          if (t.params[p.flag].is_discarded()) t.params[p.flag] = v->second;
        }
      }
      for (const auto& m : ws().metric_history(run.id, spec.primary_metric)) {
        t.metric[m.epoch] = m.value;
      }
      const std::string status = tracking::effective_status(run, now, host);
      next_index = std::max(next_index, t.index + 1);
      if (status == "completed" || status == "cancelled" || status == "failed") {
        t.status = status;
        t.reason = run.error;
        trials.push_back(t);
      } else {
        to_rerun.push_back(t);
      }
    }
    // Trials the earlier controller started but that never recorded a run: drawn again (the
    // samplers are deterministic per trial index) and run from the start.
    for (int64_t i = 0; i < next_index; ++i) {
      const auto known = [i](const Trial& t) { return t.index == i; };
      if (std::any_of(trials.begin(), trials.end(), known) ||
          std::any_of(to_rerun.begin(), to_rerun.end(), known)) {
        continue;
      }
      if (auto params = sampler->sample(i, observations())) {
        Trial t;
        t.index = i;
        t.params = *params;
        to_rerun.push_back(t);
      }
    }
    // The plot's time axis: the order in which the earlier controller saw them finish.
    std::sort(trials.begin(), trials.end(),
              [](const Trial& a, const Trial& b) { return a.end < b.end; });
    for (auto& t : trials) t.finish_order = ++finish_counter;
    return to_rerun;
  }

  std::vector<Observation> observations() const {
    std::vector<Observation> obs;
    for (const auto& t : trials) {
      if (!finished(t) || t.metric.empty()) continue;
      const double v = t.metric.rbegin()->second;
      obs.push_back({t.params, spec.maximize() ? v : -v});
    }
    return obs;
  }

  int threads_per_trial() const {
    for (const auto& a : spec.train_args) {
      if (a == "--threads" || a.rfind("--threads=", 0) == 0) return 0;  // the user chose
    }
    const int cores =
        options.cores > 0 ? options.cores : static_cast<int>(std::thread::hardware_concurrency());
    return std::max<int>(1, cores / static_cast<int>(spec.max_concurrent_runs));
  }

  std::string trial_name(const Trial& t) const {
    return fmt::format("{}-trial-{:03}", spec.experiment, t.index);
  }

  /// What marks a child run as trial `t` of this sweep, with its sampled parameters.
  std::map<std::string, std::string> trial_tags(const Trial& t) const {
    std::map<std::string, std::string> tags = {{"sweep", sweep_id()},
                                               {"trial", std::to_string(t.index)}};
    for (const auto& [flag, value] : t.params) tags["param." + flag] = value.dump();
    return tags;
  }

  void launch(Trial t, bool resume) {
    const fs::path dir = trial_dir(t.index);
    std::vector<std::string> argv = spec.launcher;
    argv.push_back(options.dtrain_binary);
    argv.push_back("train");
    argv.insert(argv.end(), spec.train_args.begin(), spec.train_args.end());
    for (const auto& [flag, value] : t.params) {
      argv.push_back("--" + flag);
      argv.push_back(value_text(value));
    }
    argv.insert(argv.end(), {"--workspace", fs::absolute(options.workspace).string(),
                             "--experiment", spec.experiment, "--output-dir", dir.string(),
                             "--run-name", trial_name(t), "--progress", "never"});
    for (const auto& [key, value] : trial_tags(t)) {
      argv.insert(argv.end(), {"--tag", key + "=" + value});
    }
    if (const int threads = threads_per_trial(); threads > 0) {
      argv.insert(argv.end(), {"--threads", std::to_string(threads)});
    }
    std::error_code ec;
    if (resume && fs::is_directory(dir / "checkpoints", ec) &&
        !fs::is_empty(dir / "checkpoints", ec)) {
      argv.insert(argv.end(), {"--resume-from", (dir / "checkpoints").string()});
    } else if (resume && !t.run_id.empty()) {
      // No checkpoint to continue from: the old record is closed and the trial starts over.
      ws().finish_run(t.run_id, "failed",
                      "the sweep controller stopped before its first "
                      "checkpoint; the trial was started again");
      t.run_id.clear();
      t.metric.clear();
    }
    ProcessOptions o;
    o.argv = argv;
    o.name = fmt::format("trial {}", t.index);
    o.output = ProcessOptions::Output::kLines;
    const int64_t index = t.index;
    o.on_line = [this, index](const std::string& line) {
      if (line.find("[error]") == std::string::npos) return;
      std::lock_guard<std::mutex> lock(error_mutex);
      last_error[index] = line.substr(line.find("[error]") + 8);
    };
    t.status = "running";
    t.start = tracking::now_seconds();
    processes[t.index] = std::make_unique<Subprocess>(std::move(o));
    spdlog::info("trial {} {}: {}", t.index, resume ? "resumed" : "started", params_text(t.params));
    trials.push_back(std::move(t));
  }

  Trial* trial(int64_t index) {
    for (auto& t : trials) {
      if (t.index == index) return &t;
    }
    return nullptr;
  }

  void find_run(Trial& t) {
    if (!t.run_id.empty()) return;
    for (const auto& run : ws().list_runs(spec.experiment, true)) {
      auto s = run.tags.find("sweep");
      auto i = run.tags.find("trial");
      if (s != run.tags.end() && s->second == sweep_id() && i != run.tags.end() &&
          i->second == std::to_string(t.index) && run.start_time >= t.start - 1) {
        t.run_id = run.id;
        return;
      }
    }
  }

  MetricStreams streams() const {
    MetricStreams s;
    for (const auto& t : trials) s[t.index] = t.metric;
    return s;
  }

  void cancel(Trial& t, const std::string& reason) {
    auto& proc = processes.at(t.index);
    proc->stop(std::chrono::seconds(10));
    t.status = "cancelled";
    t.reason = reason;
    t.end = tracking::now_seconds();
    t.finish_order = ++finish_counter;
    if (t.run_id.empty()) find_run(t);
    if (!t.run_id.empty()) ws().finish_run(t.run_id, "cancelled", reason);
    spdlog::info("trial {} cancelled: {}", t.index, reason);
    processes.erase(t.index);
  }

  /// New epochs of a running trial: policy decisions.
  void watch(Trial& t) {
    find_run(t);
    if (t.run_id.empty()) return;
    for (const auto& m : ws().metric_history(t.run_id, spec.primary_metric)) {
      if (t.metric.count(m.epoch)) continue;
      t.metric[m.epoch] = m.value;
      const Decision d = policy.evaluate(t.index, m.epoch, streams());
      if (d.cancel) {
        cancel(t, d.reason);
        return;
      }
    }
  }

  void reap(Trial& t, int code) {
    processes.erase(t.index);
    t.end = tracking::now_seconds();
    t.finish_order = ++finish_counter;
    find_run(t);
    if (!t.run_id.empty()) {
      for (const auto& m : ws().metric_history(t.run_id, spec.primary_metric)) {
        t.metric[m.epoch] = m.value;
      }
    }
    if (code == 0) {
      t.status = "completed";
      spdlog::info("trial {} completed: {} {} after {} epochs ({:.0f} s)", t.index,
                   spec.primary_metric,
                   t.metric.empty() ? "-" : fmt::format("{:.4f}", t.metric.rbegin()->second),
                   t.metric.size(), t.end - t.start);
    } else {
      std::lock_guard<std::mutex> lock(error_mutex);
      t.status = "failed";
      t.reason = last_error.count(t.index) ? last_error[t.index]
                                           : "exited with code " + std::to_string(code);
      spdlog::warn("trial {} failed (exit {}): {}", t.index, code, t.reason);
      // A trial that died before recording its run (bad data, a launcher error) still gets
      // one, so the workspace shows every trial; one that did is closed with the reason (a
      // process killed by a signal could not say it itself).
      if (t.run_id.empty()) {
        tracking::NewRun run;
        run.experiment = spec.experiment;
        run.name = trial_name(t);
        run.strategy = "sweep trial";
        run.output_dir = fs::absolute(trial_dir(t.index)).string();
        run.tags = trial_tags(t);
        t.run_id = ws().create_run(run);
      }
      ws().finish_run(t.run_id, "failed", t.reason);
    }
  }

  /// While one of the first max_concurrent_runs trials has failed and others of them still run,
  /// no new trial starts: if they fail the same way the spec is at fault.
  bool hold_launches() const {
    bool failed = false, running = false;
    for (const auto& t : trials) {
      if (t.index >= spec.max_concurrent_runs) continue;
      failed |= t.status == "failed";
      running |= t.status == "running";
    }
    return failed && running;
  }

  /// The same error failing the first max_concurrent_runs trials is the spec's fault.
  void check_systematic_failure() {
    const auto n = static_cast<size_t>(spec.max_concurrent_runs);
    std::vector<const Trial*> first;
    for (const auto& t : trials) {
      if (t.index < static_cast<int64_t>(n)) first.push_back(&t);
    }
    if (first.size() < n) return;
    for (const auto* t : first) {
      if (t->status != "failed" || t->reason != first[0]->reason) return;
    }
    throw ConfigError(fmt::format(
        "sweep stopped: the first {} trial{} failed with the same error, so the spec or "
        "train_args are at fault: {}",
        n, n == 1 ? "" : "s", first[0]->reason));
  }

  void stop_all(const std::string& reason) {
    for (auto& t : trials) {
      if (t.status == "running" && processes.count(t.index)) cancel(t, reason);
    }
  }

  /// Best first; trials without the metric last.
  std::vector<const Trial*> ranked() const {
    std::vector<const Trial*> r;
    for (const auto& t : trials) r.push_back(&t);
    std::stable_sort(r.begin(), r.end(), [&](const Trial* a, const Trial* b) {
      if (a->metric.empty() != b->metric.empty()) return b->metric.empty();
      if (a->metric.empty()) return a->index < b->index;
      const double x = a->metric.rbegin()->second, y = b->metric.rbegin()->second;
      return spec.maximize() ? x > y : x < y;
    });
    return r;
  }

  void report(int exit_code) {
    const auto order = ranked();
    std::vector<std::vector<std::string>> rows;
    std::vector<std::string> header = {"TRIAL", "STATUS"};
    for (const auto& p : spec.parameters) header.push_back(p.flag);
    header.insert(header.end(), {spec.primary_metric, "EPOCHS", "SECONDS", "RUN"});
    rows.push_back(header);
    nlohmann::json table = nlohmann::json::array();
    for (const Trial* t : order) {
      std::vector<std::string> row = {std::to_string(t->index), t->status};
      for (const auto& p : spec.parameters) {
        auto it = t->params.find(p.flag);
        row.push_back(it == t->params.end() ? "-" : value_text(it->second));
      }
      row.push_back(t->metric.empty() ? "-" : fmt::format("{:.4f}", t->metric.rbegin()->second));
      row.push_back(std::to_string(t->metric.size()));
      row.push_back(t->end > 0 ? fmt::format("{:.0f}", t->end - t->start) : "-");
      row.push_back(t->run_id.substr(0, 8));
      rows.push_back(row);
      nlohmann::json params = nlohmann::json::object();
      for (const auto& [k, v] : t->params) params[k] = v;
      table.push_back(
          {{"trial", t->index},
           {"status", t->status},
           {"reason", t->reason},
           {"params", params},
           {spec.primary_metric,
            t->metric.empty() ? nlohmann::json() : nlohmann::json(t->metric.rbegin()->second)},
           {"epochs", t->metric.size()},
           {"run_id", t->run_id}});
    }
    std::cout << "\n" << format_table(rows);
    const Trial* best = !order.empty() && !order[0]->metric.empty() ? order[0] : nullptr;
    nlohmann::json summary = {{"sweep_id", sweep_id()}, {"trials", table}};
    if (best != nullptr) {
      std::cout << "\nbest: trial " << best->index << ", run " << best->run_id << ", "
                << spec.primary_metric << " "
                << fmt::format("{:.4f}", best->metric.rbegin()->second) << ", "
                << params_text(best->params) << std::endl;
      summary["best"] = table[0];
      ws().log_metrics(sweep_id(),
                       {{"best_" + spec.primary_metric, static_cast<int64_t>(trials.size()), 0,
                         best->metric.rbegin()->second, tracking::now_seconds()}});
      ws().set_tags(sweep_id(), {{"best_run", best->run_id}});
    } else {
      std::cout << "\nno trial recorded " << spec.primary_metric << std::endl;
    }
    write_file_atomic(out / "sweep.json", summary.dump(2) + "\n");
    draw(out / "sweep.png");
    for (const char* f : {"sweep.json", "sweep.png"}) {
      if (fs::exists(out / f)) ws().add_artifact(sweep_id(), f, out / f);
    }
    if (!options.register_best.empty()) {
      if (best == nullptr || best->run_id.empty()) {
        throw DataError("--register-best: no trial finished with a model to register");
      }
      tracking::RegisterOptions o;
      o.name = options.register_best;
      o.tags = {{"sweep", sweep_id()}};
      const int64_t v = tracking::ModelRegistry(ws()).register_from_run(best->run_id, "model", o);
      std::cout << "registered the best trial's model as " << o.name << " version " << v
                << std::endl;
    }
    parent.finish(exit_code == 0 ? "completed" : "killed",
                  exit_code == 0 ? "" : "stopped by a signal");
    spdlog::info("sweep {}: {}; table in {}, plot in {}", sweep_id(), progress_line(),
                 (out / "sweep.json").string(), (out / "sweep.png").string());
  }

  /// The primary metric per trial in the order they finished, the best so far, and the
  /// cancelled trials marked.
  void draw(const fs::path& png) {
    std::vector<const Trial*> by_time;
    for (const auto& t : trials) {
      if (finished(t) && !t.metric.empty()) by_time.push_back(&t);
    }
    if (by_time.empty()) return;
    std::sort(by_time.begin(), by_time.end(),
              [](const Trial* a, const Trial* b) { return a->finish_order < b->finish_order; });
    sinks::Series done{"completed"}, cancelled{"cancelled"}, best{"best so far"};
    done.line = cancelled.line = false;
    double best_value = 0;
    for (size_t i = 0; i < by_time.size(); ++i) {
      const double x = static_cast<double>(i + 1), v = by_time[i]->metric.rbegin()->second;
      (by_time[i]->status == "cancelled" ? cancelled : done).x.push_back(x);
      (by_time[i]->status == "cancelled" ? cancelled : done).y.push_back(v);
      if (i == 0 || (spec.maximize() ? v > best_value : v < best_value)) best_value = v;
      best.x.push_back(x);
      best.y.push_back(best_value);
    }
    sinks::Panel panel{
        "Sweep " + sweep_id().substr(0, 8) + ": " + spec.primary_metric + " per trial",
        "trial (in the order they finished)",
        spec.primary_metric,
        {}};
    panel.series = {done, cancelled, best};
    sinks::plot_png(png, {panel}, 900, 500);
  }

  std::string progress_line() const {
    int64_t done = 0, completed = 0, cancelled = 0, failed = 0;
    const Trial* best = nullptr;
    for (const auto& t : trials) {
      if (!finished(t)) continue;
      ++done;
      completed += t.status == "completed";
      cancelled += t.status == "cancelled";
      failed += t.status == "failed";
      if (!t.metric.empty() &&
          (best == nullptr ||
           (spec.maximize() ? t.metric.rbegin()->second > best->metric.rbegin()->second
                            : t.metric.rbegin()->second < best->metric.rbegin()->second))) {
        best = &t;
      }
    }
    return fmt::format("{}/{} trials done ({} completed, {} cancelled, {} failed){}", done,
                       spec.max_total_runs, completed, cancelled, failed,
                       best ? fmt::format(", best {} {:.4f} (trial {})", spec.primary_metric,
                                          best->metric.rbegin()->second, best->index)
                            : "");
  }
};

SweepRunner::SweepRunner(SweepSpec spec, SweepOptions options)
    : spec_(std::move(spec)), options_(std::move(options)) {}

int SweepRunner::run() {
  install_stop_signals();
  Impl s(spec_, options_, trials_);
  s.start_parent();
  spdlog::info(
      "sweep {} in experiment '{}': {} sampling, up to {} trials, {} at a time; outputs "
      "in {}",
      s.sweep_id(), spec_.experiment, spec_.sampling, spec_.max_total_runs,
      spec_.max_concurrent_runs, s.out.string());
  std::vector<Trial> rerun;
  if (!options_.resume_id.empty()) rerun = s.recover();
  const auto deadline =
      Clock::now() + std::chrono::duration<double>(spec_.max_duration_minutes * 60);
  int exit_code = 0;
  try {
    for (auto& t : rerun) s.launch(t, /*resume=*/true);
    while (true) {
      if (const int sig = stop_signal()) {
        s.stop_all("the sweep was stopped by " + signal_name(sig));
        exit_code = 128 + sig;
        break;
      }
      if (Clock::now() > deadline) {
        s.stop_all("max_duration_minutes reached");
        break;
      }
      // Watch and reap.
      for (auto& t : trials_) {
        if (t.status != "running" || !s.processes.count(t.index)) continue;
        if (auto code = s.processes.at(t.index)->poll()) {
          s.reap(t, *code);
          spdlog::info("{}", s.progress_line());
        } else {
          s.watch(t);
          if (t.status == "cancelled") spdlog::info("{}", s.progress_line());
        }
      }
      s.check_systematic_failure();
      // Launch.
      int64_t running = static_cast<int64_t>(s.processes.size());
      while (!s.exhausted && !s.hold_launches() && running < spec_.max_concurrent_runs &&
             s.next_index < spec_.max_total_runs) {
        auto params = s.sampler->sample(s.next_index, s.observations());
        if (!params) {
          s.exhausted = true;
          break;
        }
        Trial t;
        t.index = s.next_index++;
        t.params = *params;
        s.launch(t, false);
        ++running;
      }
      if (s.processes.empty()) break;
      std::this_thread::sleep_for(std::chrono::duration<double>(options_.poll_seconds));
    }
  } catch (const std::exception& e) {
    s.stop_all(e.what());
    s.parent.finish(dynamic_cast<const Interrupted*>(&e) ? "killed" : "failed", e.what());
    throw;
  }
  s.report(exit_code);
  return exit_code;
}

}  // namespace dtrain::sweep
