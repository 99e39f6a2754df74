#include "tools/tracking/workspace.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <random>

#include "core/errors.h"
#include "core/file_util.h"
#include "dtrain/config.h"

namespace dtrain::tracking {
namespace fs = std::filesystem;

namespace {

/// PRAGMA application_id of a dtrain workspace ("dtrw"): tells our database from any other.
constexpr int64_t kApplicationId = 0x64747277;
/// Largest artifact file a run may record (model files are a few MB).
constexpr uint64_t kMaxArtifactBytes = uint64_t{4} << 30;

/// Checks the folder and returns the database path inside it.
fs::path prepare_root(const fs::path& root, bool create) {
  if (root.empty()) throw ConfigError("--workspace: expected a folder, got an empty path");
  std::error_code ec;
  if (fs::exists(root, ec) && !fs::is_directory(root, ec)) {
    throw ConfigError("workspace " + root.string() + " exists but is not a folder");
  }
  if (!fs::exists(root, ec)) {
    if (!create) throw ConfigError("workspace " + root.string() + " does not exist");
    fs::create_directories(root, ec);
    if (ec) {
      throw ConfigError("cannot create workspace folder " + root.string() + ": " + ec.message());
    }
  }
  if (create) {
    // Permission bits do not tell (root ignores them; read-only mounts): try to write.
    std::string probe = (root / ".write-probe.XXXXXX").string();
    const int fd = ::mkstemp(probe.data());
    if (fd < 0) {
      throw ConfigError("workspace folder " + root.string() +
                        " is not writable: " + std::strerror(errno));
    }
    ::close(fd);
    ::unlink(probe.c_str());
  }
  const fs::path db = root / Workspace::kDatabaseName;
  if (fs::exists(db, ec) && !fs::is_regular_file(db, ec)) {
    throw ConfigError(db.string() + ": not a dtrain workspace database (not a regular file)");
  }
  if (!create && !fs::exists(db, ec)) {
    throw ConfigError("workspace " + root.string() + " has no " + Workspace::kDatabaseName +
                      " (no run was ever tracked there)");
  }
  return db;
}

std::string random_hex(size_t chars) {
  static thread_local std::mt19937_64 rng(std::random_device{}() ^ static_cast<uint64_t>(::getpid())
                                                                       << 32);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < chars; ++i) s += kHex[rng() % 16];
  return s;
}

std::string generated_run_name() {
  static const char* kAdjectives[] = {"amber",  "brisk", "calm",  "dusty", "eager", "fuzzy",
                                      "gentle", "hazy",  "icy",   "jolly", "keen",  "lucky",
                                      "merry",  "noble", "quiet", "rapid", "sunny", "tidy"};
  static const char* kNouns[] = {"otter", "falcon", "maple", "comet", "harbor", "lynx",
                                 "cedar", "orbit",  "raven", "delta", "fjord",  "heron",
                                 "ember", "quartz", "tern",  "vale",  "willow", "zephyr"};
  const std::string r = random_hex(8);
  const unsigned long v = std::stoul(r, nullptr, 16);
  return std::string(kAdjectives[v % 18]) + "-" + kNouns[(v / 18) % 18] + "-" +
         std::to_string(v % 1000);
}

const char* kRunColumns =
    "id, experiment, name, status, error, start_time, end_time, heartbeat, host, pid, "
    "world_size, strategy, dtrain_version, output_dir, deleted";

/// Schema migrations: entry i brings a database from version i to i + 1.
const std::vector<const char*> kMigrations = {
    // 0 -> 1: runs, params, tags, metrics, artifacts.
    R"(CREATE TABLE runs (
         id TEXT PRIMARY KEY, experiment TEXT NOT NULL, name TEXT NOT NULL, status TEXT NOT NULL,
         error TEXT NOT NULL DEFAULT '', start_time REAL NOT NULL, end_time REAL,
         heartbeat REAL NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL,
         world_size INTEGER NOT NULL, strategy TEXT NOT NULL, dtrain_version TEXT NOT NULL,
         output_dir TEXT NOT NULL, deleted INTEGER NOT NULL DEFAULT 0);
       CREATE INDEX runs_by_experiment ON runs(experiment, start_time);
       CREATE TABLE params (run_id TEXT NOT NULL REFERENCES runs(id), key TEXT NOT NULL,
         value TEXT NOT NULL, PRIMARY KEY (run_id, key));
       CREATE TABLE tags (run_id TEXT NOT NULL REFERENCES runs(id), key TEXT NOT NULL,
         value TEXT NOT NULL, PRIMARY KEY (run_id, key));
       CREATE TABLE metrics (run_id TEXT NOT NULL REFERENCES runs(id), key TEXT NOT NULL,
         step INTEGER NOT NULL, epoch INTEGER NOT NULL, value REAL NOT NULL, time REAL NOT NULL,
         PRIMARY KEY (run_id, key, step));
       CREATE TABLE artifacts (run_id TEXT NOT NULL REFERENCES runs(id), path TEXT NOT NULL,
         sha256 TEXT NOT NULL, size INTEGER NOT NULL, PRIMARY KEY (run_id, path));)",
    // 1 -> 2: the model registry.
    R"(CREATE TABLE registered_models (name TEXT PRIMARY KEY, created REAL NOT NULL,
         next_version INTEGER NOT NULL DEFAULT 1);
       CREATE TABLE model_versions (name TEXT NOT NULL REFERENCES registered_models(name),
         version INTEGER NOT NULL, run_id TEXT NOT NULL DEFAULT '', source TEXT NOT NULL,
         description TEXT NOT NULL DEFAULT '', created REAL NOT NULL, creator TEXT NOT NULL,
         architecture TEXT NOT NULL, metrics TEXT NOT NULL, config TEXT NOT NULL,
         PRIMARY KEY (name, version));
       CREATE TABLE model_files (name TEXT NOT NULL, version INTEGER NOT NULL, path TEXT NOT NULL,
         sha256 TEXT NOT NULL, size INTEGER NOT NULL, PRIMARY KEY (name, version, path));
       CREATE TABLE model_aliases (name TEXT NOT NULL, alias TEXT NOT NULL,
         version INTEGER NOT NULL, PRIMARY KEY (name, alias));
       CREATE TABLE model_version_tags (name TEXT NOT NULL, version INTEGER NOT NULL,
         key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (name, version, key));)",
};

void exec_script(Db& db, const std::string& script) {
  // Statement runs one statement at a time; split the script on ';' (no ';' inside strings).
  size_t start = 0;
  while (start < script.size()) {
    size_t end = script.find(';', start);
    if (end == std::string::npos) end = script.size();
    const std::string one = script.substr(start, end - start);
    if (one.find_first_not_of(" \n\t") != std::string::npos) db.exec(one);
    start = end + 1;
  }
}

}  // namespace

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof(buf) - 1) != 0) return "unknown";
  return buf;
}

std::string effective_status(const RunRecord& run, double now, const std::string& this_host) {
  if (run.status != "running") return run.status;
  if (now - run.heartbeat > kLostAfterSeconds) return "lost";
  if (run.host == this_host && run.pid > 0 && ::kill(static_cast<pid_t>(run.pid), 0) != 0 &&
      errno == ESRCH) {
    return "lost";
  }
  return "running";
}

Workspace::Workspace(const fs::path& root, bool create, int64_t schema_version)
    : root_(root), db_(prepare_root(root, create), create), target_version_(schema_version) {
  if (schema_version < 1 || schema_version > kSchemaVersion) {
    throw ConfigError("workspace schema version " + std::to_string(schema_version) +
                      " is not one this dtrain writes (1 to " + std::to_string(kSchemaVersion) +
                      ")");
  }
  ensure_schema();
}

void Workspace::ensure_schema() {
  db_.transaction([&] {
    // Read under the write lock, in one transaction: another process may be creating the schema
    // (read apart, its id and its tables could come from either side of its commit).
    const int64_t app = db_.query_integer("PRAGMA application_id").value_or(0);
    const int64_t tables =
        db_.query_integer("SELECT count(*) FROM sqlite_master WHERE type = 'table'").value_or(0);
    if (app != kApplicationId && (app != 0 || tables > 0)) {
      throw ConfigError(db_.path().string() +
                        ": an SQLite database, but not a dtrain workspace (application_id " +
                        std::to_string(app) + ")");
    }
    const bool has_version_table =
        db_.query_integer("SELECT count(*) FROM sqlite_master WHERE name = 'schema_version'")
            .value_or(0) > 0;
    int64_t version = 0;
    if (has_version_table) {
      version = db_.query_integer("SELECT version FROM schema_version").value_or(0);
    } else {
      db_.exec("CREATE TABLE schema_version (version INTEGER NOT NULL)");
      db_.exec("INSERT INTO schema_version (version) VALUES (0)");
      db_.exec("PRAGMA application_id = " + std::to_string(kApplicationId));
    }
    if (version > kSchemaVersion) {
      throw ConfigError(db_.path().string() + ": workspace schema version " +
                        std::to_string(version) + " was written by a newer dtrain (this one, " +
                        DTRAIN_VERSION + ", knows up to " + std::to_string(kSchemaVersion) + ")");
    }
    for (int64_t v = version; v < target_version_; ++v) exec_script(db_, kMigrations.at(v));
    if (version < target_version_) {
      Statement(db_, "UPDATE schema_version SET version = ?").bind_all(target_version_).run();
    }
  });
}

std::string Workspace::create_run(const NewRun& run) {
  const std::string id = run.id.empty() ? random_hex(32) : run.id;
  const std::string name = run.name.empty() ? generated_run_name() : run.name;
  const double now = now_seconds();
  db_.transaction([&] {
    Statement(db_,
              "INSERT INTO runs (id, experiment, name, status, start_time, heartbeat, host, pid, "
              "world_size, strategy, dtrain_version, output_dir) "
              "VALUES (?, ?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?)")
        .bind_all(id, run.experiment, name, now, now, host_name(), int64_t{::getpid()},
                  run.world_size, run.strategy, std::string(DTRAIN_VERSION), run.output_dir)
        .run();
  });
  set_params(id, run.params);
  set_tags(id, run.tags);
  return id;
}

bool Workspace::has_run(const std::string& id) {
  Statement st(db_, "SELECT 1 FROM runs WHERE id = ?");
  st.bind_all(id);
  return st.step();
}

void Workspace::resume_run(const std::string& id, int64_t epochs_done) {
  const double now = now_seconds();
  db_.transaction([&] {
    Statement(db_,
              "UPDATE runs SET status = 'running', error = '', end_time = NULL, heartbeat = ?, "
              "host = ?, pid = ? WHERE id = ?")
        .bind_all(now, host_name(), int64_t{::getpid()}, id)
        .run();
    Statement(db_, "DELETE FROM metrics WHERE run_id = ? AND epoch > ?")
        .bind_all(id, epochs_done)
        .run();
  });
}

void Workspace::heartbeat(const std::string& id) {
  db_.transaction([&] {
    Statement(db_, "UPDATE runs SET heartbeat = ? WHERE id = ?").bind_all(now_seconds(), id).run();
  });
}

void Workspace::finish_run(const std::string& id, const std::string& status,
                           const std::string& error) {
  const double now = now_seconds();
  db_.transaction([&] {
    Statement(db_,
              "UPDATE runs SET status = ?, error = ?, end_time = ?, heartbeat = ? WHERE id = ?")
        .bind_all(status, error, now, now, id)
        .run();
  });
}

void Workspace::set_params(const std::string& id, const std::map<std::string, std::string>& kv) {
  upsert_pairs("INSERT OR REPLACE INTO params (run_id, key, value) VALUES (?, ?, ?)", id, kv);
}

void Workspace::set_tags(const std::string& id, const std::map<std::string, std::string>& kv) {
  upsert_pairs("INSERT OR REPLACE INTO tags (run_id, key, value) VALUES (?, ?, ?)", id, kv);
}

void Workspace::upsert_pairs(const char* sql, const std::string& id,
                             const std::map<std::string, std::string>& kv) {
  if (kv.empty()) return;
  db_.transaction([&] {
    Statement st(db_, sql);
    for (const auto& [k, v] : kv) {
      st.reset();
      st.bind_all(id, k, v).run();
    }
  });
}

void Workspace::log_metrics(const std::string& id, const std::vector<MetricPoint>& points) {
  if (points.empty()) return;
  db_.transaction([&] {
    Statement st(db_,
                 "INSERT OR REPLACE INTO metrics (run_id, key, step, epoch, value, time) "
                 "VALUES (?, ?, ?, ?, ?, ?)");
    for (const auto& p : points) {
      st.reset();
      st.bind_all(id, p.key, p.step, p.epoch, p.value, p.time).run();
    }
    Statement(db_, "UPDATE runs SET heartbeat = ? WHERE id = ?").bind_all(now_seconds(), id).run();
  });
}

void Workspace::set_deleted(const std::string& id, bool deleted) {
  db_.transaction([&] {
    Statement(db_, "UPDATE runs SET deleted = ? WHERE id = ?")
        .bind_all(int64_t{deleted ? 1 : 0}, id)
        .run();
  });
}

std::string Workspace::resolve_run(const std::string& id_or_prefix) {
  if (id_or_prefix.empty() ||
      id_or_prefix.find_first_not_of("0123456789abcdef") != std::string::npos) {
    throw ConfigError("run '" + id_or_prefix +
                      "': expected a run id or a prefix of one (lower-case hex digits)");
  }
  Statement st(db_, "SELECT id, name FROM runs WHERE substr(id, 1, ?) = ? ORDER BY id LIMIT 6");
  st.bind_all(static_cast<int64_t>(id_or_prefix.size()), id_or_prefix);
  std::vector<std::string> found;
  while (st.step()) found.push_back(st.text(0) + " (" + st.text(1) + ")");
  if (found.empty()) {
    throw ConfigError("run '" + id_or_prefix + "': no such run in workspace " + root_.string() +
                      " (see: dtrain runs list)");
  }
  if (found.size() > 1) {
    std::string list;
    for (const auto& f : found) list += "\n  " + f;
    throw ConfigError(
        "run '" + id_or_prefix + "' is ambiguous: it begins " +
        (found.size() > 5 ? "more than 5 runs" : std::to_string(found.size()) + " runs") + ":" +
        list + "\ngive more of the id");
  }
  return found[0].substr(0, found[0].find(' '));
}

RunRecord Workspace::read_run_row(Statement& st) {
  RunRecord r;
  r.id = st.text(0);
  r.experiment = st.text(1);
  r.name = st.text(2);
  r.status = st.text(3);
  r.error = st.text(4);
  r.start_time = st.real(5);
  r.end_time = st.is_null(6) ? 0 : st.real(6);
  r.heartbeat = st.real(7);
  r.host = st.text(8);
  r.pid = st.integer(9);
  r.world_size = st.integer(10);
  r.strategy = st.text(11);
  r.dtrain_version = st.text(12);
  r.output_dir = st.text(13);
  r.deleted = st.integer(14) != 0;
  return r;
}

void Workspace::load_details(RunRecord& run) {
  Statement p(db_, "SELECT key, value FROM params WHERE run_id = ?");
  p.bind_all(run.id);
  while (p.step()) run.params[p.text(0)] = p.text(1);
  Statement t(db_, "SELECT key, value FROM tags WHERE run_id = ?");
  t.bind_all(run.id);
  while (t.step()) run.tags[t.text(0)] = t.text(1);
  Statement m(db_,
              "SELECT m.key, m.value FROM metrics m JOIN (SELECT key, MAX(step) AS s FROM metrics "
              "WHERE run_id = ?1 GROUP BY key) l ON m.key = l.key AND m.step = l.s "
              "WHERE m.run_id = ?1");
  m.bind_all(run.id);
  while (m.step()) run.metrics[m.text(0)] = m.real(1);
}

RunRecord Workspace::get_run(const std::string& id) {
  Statement st(db_, std::string("SELECT ") + kRunColumns + " FROM runs WHERE id = ?");
  st.bind_all(id);
  if (!st.step()) throw ConfigError("run '" + id + "': no such run in " + root_.string());
  RunRecord r = read_run_row(st);
  load_details(r);
  return r;
}

std::vector<RunRecord> Workspace::list_runs(const std::string& experiment, bool include_deleted) {
  Statement st(db_, std::string("SELECT ") + kRunColumns +
                        " FROM runs WHERE (?1 = '' OR experiment = ?1) AND (?2 OR deleted = 0) "
                        "ORDER BY start_time DESC, id");
  st.bind_all(experiment, int64_t{include_deleted ? 1 : 0});
  std::vector<RunRecord> runs;
  while (st.step()) runs.push_back(read_run_row(st));
  for (auto& r : runs) load_details(r);
  return runs;
}

std::vector<MetricPoint> Workspace::metric_history(const std::string& id, const std::string& key) {
  Statement st(db_,
               "SELECT key, step, epoch, value, time FROM metrics WHERE run_id = ?1 "
               "AND (?2 = '' OR key = ?2) ORDER BY step, key");
  st.bind_all(id, key);
  std::vector<MetricPoint> points;
  while (st.step()) {
    points.push_back({st.text(0), st.integer(1), st.integer(2), st.real(3), st.real(4)});
  }
  return points;
}

fs::path Workspace::blob_path(const std::string& sha256) const {
  return root_ / "artifacts" / "sha256" / sha256.substr(0, 2) / sha256;
}

std::string Workspace::put_blob(const std::string& bytes) {
  const std::string sha = sha256_hex(bytes);
  const fs::path path = blob_path(sha);
  std::error_code ec;
  // An existing blob of the right size is the same content (its name is its hash); a partial
  // one cannot exist because blobs appear only by rename.
  if (fs::is_regular_file(path, ec) && fs::file_size(path, ec) == bytes.size()) return sha;
  write_file_atomic(path, bytes);
  return sha;
}

ArtifactRecord Workspace::add_artifact(const std::string& id, const std::string& rel_path,
                                       const fs::path& file) {
  const std::string bytes = read_file(file, kMaxArtifactBytes);
  ArtifactRecord a{rel_path, put_blob(bytes), static_cast<int64_t>(bytes.size())};
  db_.transaction([&] {
    Statement(db_,
              "INSERT OR REPLACE INTO artifacts (run_id, path, sha256, size) VALUES (?, ?, ?, ?)")
        .bind_all(id, a.path, a.sha256, a.size)
        .run();
  });
  return a;
}

std::vector<ArtifactRecord> Workspace::artifacts(const std::string& id) {
  Statement st(db_, "SELECT path, sha256, size FROM artifacts WHERE run_id = ? ORDER BY path");
  st.bind_all(id);
  std::vector<ArtifactRecord> out;
  while (st.step()) out.push_back({st.text(0), st.text(1), st.integer(2)});
  return out;
}

std::string Workspace::read_verified_blob(const std::string& sha256, int64_t size,
                                          const std::string& what) {
  const fs::path path = blob_path(sha256);
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) {
    throw DataError(what + ": stored file " + path.string() + " is missing from the workspace");
  }
  const std::string bytes = read_file(path, kMaxArtifactBytes);
  const std::string got = sha256_hex(bytes);
  if (got != sha256 || static_cast<int64_t>(bytes.size()) != size) {
    throw DataError(what + ": stored file " + path.string() + " was altered: SHA-256 " + got +
                    " (" + std::to_string(bytes.size()) + " bytes), expected " + sha256 + " (" +
                    std::to_string(size) + " bytes)");
  }
  return bytes;
}

}  // namespace dtrain::tracking
