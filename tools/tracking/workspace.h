// The workspace: a folder with one SQLite run store (runs, params, tags, step-indexed metrics,
// heartbeats) and a content-addressed artifact store. Every dtrain run that tracks writes here;
// `dtrain runs ...` reads it. Many processes may use one workspace at once.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tools/tracking/sqlite_db.h"

namespace dtrain::tracking {

/// Seconds since the Unix epoch (wall clock: these times are shown to people).
double now_seconds();

/// This machine's host name.
std::string host_name();

/// What is known of one run. `status` is what the run last wrote; effective_status() adds `lost`.
struct RunRecord {
  std::string id;
  std::string experiment;
  std::string name;
  std::string status;  ///< running, completed, failed, killed
  std::string error;   ///< why it failed or was killed
  double start_time = 0;
  double end_time = 0;  ///< 0 while running
  double heartbeat = 0;
  std::string host;
  int64_t pid = 0;
  int64_t world_size = 1;
  std::string strategy;
  std::string dtrain_version;
  std::string output_dir;
  bool deleted = false;
  std::map<std::string, std::string> params;
  std::map<std::string, std::string> tags;
  std::map<std::string, double> metrics;  ///< latest value (highest step) of every metric key
};

/// A run last heard of more than this long ago while `running` is shown as `lost`.
constexpr double kLostAfterSeconds = 60;
/// How often a live run refreshes its heartbeat.
constexpr double kHeartbeatSeconds = 10;

/// `running` becomes `lost` when the heartbeat is older than kLostAfterSeconds at `now`, or when
/// the run's process was on `this_host` and no longer exists.
std::string effective_status(const RunRecord& run, double now, const std::string& this_host);

struct MetricPoint {
  std::string key;
  int64_t step = 0;   ///< global optimizer step when it was measured
  int64_t epoch = 0;  ///< epoch it belongs to (1-based)
  double value = 0;
  double time = 0;
};

struct ArtifactRecord {
  std::string path;  ///< relative to the run's outputs/, '/'-separated
  std::string sha256;
  int64_t size = 0;
};

/// What a new run records at its start.
struct NewRun {
  std::string id;  ///< empty: generated
  std::string experiment = "default";
  std::string name;  ///< empty: generated
  int64_t world_size = 1;
  std::string strategy = "none";
  std::string output_dir;
  std::map<std::string, std::string> params;
  std::map<std::string, std::string> tags;
};

class Workspace {
 public:
  static constexpr int64_t kSchemaVersion = 2;
  static constexpr const char* kDatabaseName = "workspace.db";

  /// Opens the workspace at `root`, creating the folder and database if `create` (else they
  /// must exist). Throws ConfigError naming the path when the folder cannot be created or
  /// written, or the database is not a dtrain workspace or comes from a newer dtrain. An older
  /// database is migrated forward to `schema_version` (tests create old ones with it).
  Workspace(const std::filesystem::path& root, bool create = true,
            int64_t schema_version = kSchemaVersion);

  const std::filesystem::path& root() const { return root_; }
  Db& db() { return db_; }

  // --- Runs -------------------------------------------------------------------------------
  /// Records a new run as `running` in this process; returns its id.
  std::string create_run(const NewRun& run);
  bool has_run(const std::string& id);
  /// Continues `id` in this process after `epochs_done` epochs: status running again, metrics of
  /// later epochs (written before an interruption) removed so no epoch appears twice.
  void resume_run(const std::string& id, int64_t epochs_done);
  void heartbeat(const std::string& id);
  /// Final status: completed, failed or killed, with the reason.
  void finish_run(const std::string& id, const std::string& status, const std::string& error);
  void set_params(const std::string& id, const std::map<std::string, std::string>& params);
  void set_tags(const std::string& id, const std::map<std::string, std::string>& tags);
  void log_metrics(const std::string& id, const std::vector<MetricPoint>& points);
  void set_deleted(const std::string& id, bool deleted);

  /// Full id from a full id or unique prefix; ConfigError (exit 2) when unknown or ambiguous.
  std::string resolve_run(const std::string& id_or_prefix);
  RunRecord get_run(const std::string& id);
  /// Runs, newest first; `experiment` empty: all.
  std::vector<RunRecord> list_runs(const std::string& experiment, bool include_deleted);
  /// Every point of `key` (all keys if empty), by step.
  std::vector<MetricPoint> metric_history(const std::string& id, const std::string& key = "");

  // --- Artifacts --------------------------------------------------------------------------
  /// Copies `file` into the store (once per content) and records it as `rel_path` of run `id`.
  ArtifactRecord add_artifact(const std::string& id, const std::string& rel_path,
                              const std::filesystem::path& file);
  std::vector<ArtifactRecord> artifacts(const std::string& id);
  /// Where the blob with this SHA-256 lives.
  std::filesystem::path blob_path(const std::string& sha256) const;
  /// The blob's bytes after checking them against `sha256` and `size`: DataError naming the
  /// blob (and `what`, e.g. the run and path) if it is missing or its content differs.
  std::string read_verified_blob(const std::string& sha256, int64_t size, const std::string& what);
  /// Stores `bytes` as a blob (temp + fsync + rename; kept if already there). Returns its SHA-256.
  std::string put_blob(const std::string& bytes);

 private:
  void ensure_schema();
  /// Runs `sql` (run_id, key, value) for every pair in one transaction.
  void upsert_pairs(const char* sql, const std::string& id,
                    const std::map<std::string, std::string>& kv);
  RunRecord read_run_row(Statement& st);
  void load_details(RunRecord& run);

  std::filesystem::path root_;
  Db db_;
  int64_t target_version_;
};

}  // namespace dtrain::tracking
