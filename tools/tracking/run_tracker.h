// One training run's record in a workspace, kept by the process that writes outputs/ (rank 0 or
// the PS chief): created or resumed at the start, metrics as they come, a heartbeat thread, the
// final status, and outputs/ copied into the artifact store at the end.
#pragma once

#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tools/tracking/workspace.h"

namespace dtrain::tracking {

class RunTracker {
 public:
  /// Opens (and checks) the workspace; records nothing yet.
  explicit RunTracker(const std::filesystem::path& workspace);
  ~RunTracker();
  RunTracker(const RunTracker&) = delete;
  RunTracker& operator=(const RunTracker&) = delete;

  /// Starts recording: continues `resume_id` after `epochs_done` epochs if the workspace knows
  /// it, else creates a run (with `resume_id` as its id when not empty). Starts the heartbeat.
  void start(NewRun run, const std::string& resume_id, int64_t epochs_done);

  const std::string& run_id() const { return run_id_; }
  Workspace& workspace() { return workspace_; }

  void log_metrics(const std::vector<MetricPoint>& points);

  /// Copies the files under `outputs` (not checkpoints/ unless `include_checkpoints`) into the
  /// artifact store and records them. Returns how many files and bytes.
  std::pair<int64_t, int64_t> upload_outputs(const std::filesystem::path& outputs,
                                             bool include_checkpoints);

  /// Final status (completed, failed, killed) and reason; stops the heartbeat. Idempotent.
  void finish(const std::string& status, const std::string& error = "");

 private:
  void heartbeat_loop();
  void stop_heartbeat();

  Workspace workspace_;
  std::string run_id_;
  bool finished_ = false;
  std::thread heartbeat_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
};

}  // namespace dtrain::tracking
