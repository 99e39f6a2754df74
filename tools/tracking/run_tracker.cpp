#include "tools/tracking/run_tracker.h"

#include <spdlog/spdlog.h>

#include <chrono>

#include "core/file_util.h"

namespace dtrain::tracking {
namespace fs = std::filesystem;

RunTracker::RunTracker(const fs::path& workspace) : workspace_(workspace, /*create=*/true) {}

RunTracker::~RunTracker() { stop_heartbeat(); }

void RunTracker::start(NewRun run, const std::string& resume_id, int64_t epochs_done) {
  if (!resume_id.empty() && workspace_.has_run(resume_id)) {
    workspace_.resume_run(resume_id, epochs_done);
    workspace_.set_params(resume_id, run.params);
    workspace_.set_tags(resume_id, run.tags);
    run_id_ = resume_id;
    spdlog::info("tracking: continuing run {} in {}", run_id_, workspace_.root().string());
  } else {
    run.id = resume_id;
    run_id_ = workspace_.create_run(run);
    const RunRecord r = workspace_.get_run(run_id_);
    spdlog::info("tracking: run {} ({}) in experiment '{}' of {}", run_id_, r.name, r.experiment,
                 workspace_.root().string());
  }
  heartbeat_ = std::thread([this] { heartbeat_loop(); });
}

void RunTracker::heartbeat_loop() {
  // Its own connection: SQLite connections are not shared between threads here.
  try {
    Workspace ws(workspace_.root(), /*create=*/false);
    std::unique_lock<std::mutex> lock(mutex_);
    while (!wake_.wait_for(lock, std::chrono::duration<double>(kHeartbeatSeconds),
                           [this] { return stopping_; })) {
      lock.unlock();
      try {
        ws.heartbeat(run_id_);
      } catch (const std::exception& e) {
        spdlog::warn("tracking: heartbeat failed: {}", e.what());
      }
      lock.lock();
    }
  } catch (const std::exception& e) {
    spdlog::warn("tracking: heartbeat stopped: {}", e.what());
  }
}

void RunTracker::stop_heartbeat() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (heartbeat_.joinable()) heartbeat_.join();
}

void RunTracker::log_metrics(const std::vector<MetricPoint>& points) {
  workspace_.log_metrics(run_id_, points);
}

std::pair<int64_t, int64_t> RunTracker::upload_outputs(const fs::path& outputs,
                                                       bool include_checkpoints) {
  int64_t files = 0, bytes = 0;
  std::error_code ec;
  if (!fs::is_directory(outputs, ec)) return {0, 0};
  std::vector<fs::path> paths;
  for (auto it = fs::recursive_directory_iterator(outputs, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    const fs::path rel = fs::relative(it->path(), outputs);
    if (it->is_directory() && !include_checkpoints && rel == "checkpoints") {
      it.disable_recursion_pending();
      continue;
    }
    // Temporary files of interrupted atomic writes are not results.
    if (it->is_regular_file() && !is_temp_file_name(rel.filename().string())) {
      paths.push_back(it->path());
    }
  }
  std::sort(paths.begin(), paths.end());
  for (const auto& p : paths) {
    const ArtifactRecord a =
        workspace_.add_artifact(run_id_, fs::relative(p, outputs).generic_string(), p);
    ++files;
    bytes += a.size;
  }
  return {files, bytes};
}

void RunTracker::finish(const std::string& status, const std::string& error) {
  if (finished_ || run_id_.empty()) return;
  finished_ = true;
  stop_heartbeat();
  workspace_.finish_run(run_id_, status, error);
}

}  // namespace dtrain::tracking
